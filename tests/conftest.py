"""Shared fixtures: real embedder (loaded once), real Chroma in temporary data dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
}.items():
    os.environ.setdefault(_key, _value)

from assistant.config import Settings, load_settings  # noqa: E402
from assistant.embedder import SentenceTransformerEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"
SHARED = ROOT.parent / "shared"


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test: a private data dir, no progress bars, no environment leaking in."""
    values = {"data_dir": str(data_dir), "ingest": {"progress": False}}
    values.update(overrides)
    return load_settings(overrides=values, environ={})


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real packaged MiniLM, loaded once for the session."""
    settings = load_settings(environ={})
    emb = SentenceTransformerEmbedder.from_config(settings.embedder)
    emb.embed_batch(["warm up"])
    return emb


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory, embedder) -> Settings:
    """The bundled corpus ingested once into a session data dir."""
    from assistant.ingest.indexer import Ingestor

    settings = make_settings(tmp_path_factory.mktemp("corpus-index"))
    report = Ingestor.from_config(settings, embedder)([CORPUS])
    assert report.count("skipped") == 0, [f for f in report.files if f.status == "skipped"]
    return settings


@pytest.fixture
def shared_dir() -> Path:
    """../shared (seed and upstream fixtures); skip where this checkout has none beside it."""
    if not (SHARED / "upstream").is_dir():
        pytest.skip("../shared/upstream is not beside this checkout")
    return SHARED
