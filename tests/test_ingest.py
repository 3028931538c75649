"""Incremental ingest with the real embedder and real Chroma: hashing, replace, delete, safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.errors import StoreError
from assistant.index import Index
from assistant.ingest.indexer import Ingestor
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]

DOC = "# Canary notes\n\n## Traffic\n\nWe shift {pct} percent of traffic to the canary revision.\n"
MANIFEST = """apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {{name: scorer, namespace: ml}}
spec:
  predictor:
    canaryTrafficPercent: {pct}
    model: {{modelFormat: {{name: sklearn}}, storageUri: "s3://models/scorer"}}
"""


def consistent(settings, embedder) -> Index:
    index = Index.from_config(settings, embedder)
    wanted = index.manifest.chunk_ids()
    assert index.store.ids() == wanted
    assert index.tokens.ids() == wanted
    assert set(index.lexical.docs) == wanted
    return index


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "notes.md").write_text(DOC.format(pct=10))
    (root / "isvc.yaml").write_text(MANIFEST.format(pct=10))
    return root


def test_unchanged_tree_does_no_embedding(tmp_path, tree, embedder):
    settings = make_settings(tmp_path / "data")
    first = Ingestor.from_config(settings, embedder)([tree])
    assert (first.count("added"), first.embedded) == (2, 2)
    again = Ingestor.from_config(settings, embedder)([tree])
    assert (again.count("unchanged"), again.embedded) == (2, 0)
    consistent(settings, embedder)


def test_changed_file_replaces_its_chunks_and_deleted_file_goes(tmp_path, tree, embedder):
    settings = make_settings(tmp_path / "data")
    Ingestor.from_config(settings, embedder)([tree])
    before = Index.from_config(settings, embedder).manifest
    (tree / "isvc.yaml").write_text(MANIFEST.format(pct=30))
    (tree / "notes.md").unlink()
    report = Ingestor.from_config(settings, embedder)([tree])
    assert {f.status for f in report.files} == {"changed", "removed"}
    index = consistent(settings, embedder)
    assert index.manifest.generation == before.generation + 1
    [chunk] = index.store.get()
    assert "30%" in chunk.text and chunk.ref == "InferenceService/scorer"


def test_broken_edit_keeps_the_previous_version(tmp_path, tree, embedder):
    settings = make_settings(tmp_path / "data")
    Ingestor.from_config(settings, embedder)([tree])
    (tree / "isvc.yaml").write_text("kind: [oops\n")
    report = Ingestor.from_config(settings, embedder)([tree])
    [skipped] = [f for f in report.files if f.status == "skipped"]
    assert "invalid YAML" in skipped.reason and "previously indexed version is kept" in skipped.reason
    index = consistent(settings, embedder)
    assert any(c.ref == "InferenceService/scorer" for c in index.store.get())


def test_missing_path_and_unsupported_files_are_reported(tmp_path, tree, embedder):
    (tree / "logo.png").write_bytes(b"\x89PNG\r\n")
    settings = make_settings(tmp_path / "data")
    report = Ingestor.from_config(settings, embedder)([tree, tmp_path / "nope"])
    reasons = {Path(f.source).name: f.reason for f in report.files if f.status == "skipped"}
    assert reasons == {"logo.png": "unsupported file type '.png'", "nope": "no such file or directory"}


def test_failure_mid_write_leaves_a_consistent_index(tmp_path, tree, embedder):
    settings = make_settings(tmp_path / "data")
    Ingestor.from_config(settings, embedder)([tree])

    class Exploding:  # a seam fake: the embedder dies after storing part of the new chunks
        name, batch_size = embedder.name, 1

        def __init__(self):
            self.calls = 0

        def encode(self, texts):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("killed")
            return embedder.encode(texts)

    for n in range(5):
        (tree / f"extra{n}.md").write_text(DOC.format(pct=n))
    ingestor = Ingestor.from_config(settings, Exploding())
    with pytest.raises(RuntimeError):
        ingestor([tree])
    assert (settings.data_dir / "ingest.dirty").exists()
    report = Ingestor.from_config(settings, embedder)([tree])
    assert report.count("added") == 5
    consistent(settings, embedder)


def test_process_killed_mid_ingest_then_rerun(tmp_path, embedder):
    """A real SIGKILL during embedding; the next run heals the index and finishes the job."""
    tree = tmp_path / "big"
    tree.mkdir()
    for n in range(300):
        (tree / f"doc{n}.md").write_text(f"# Doc {n}\n\n## Part\n\n" + f"word{n} text " * 60)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "assistant.cli", "--data-dir", str(data), "ingest", str(tree)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SERVEWISE_EMBEDDER__BATCH_SIZE": "4"},
    )
    deadline = time.time() + 120
    while not (data / "chroma").exists() or not (data / "ingest.dirty").exists():
        assert proc.poll() is None and time.time() < deadline, "ingest ended before it could be killed"
        time.sleep(0.05)
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settings = make_settings(data)
    report = Ingestor.from_config(settings, embedder)([tree])
    assert report.count("added") + report.count("unchanged") == 300
    index = consistent(settings, embedder)
    assert len(index.manifest.sources) == 300


def test_concurrent_ingest_is_refused(tmp_path, tree, embedder):
    import fcntl

    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    with open(settings.data_dir / "ingest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="another ingest"):
            Ingestor.from_config(settings, embedder)([tree])
