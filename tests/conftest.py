"""Shared fixtures: real embedder (loaded once), real Chroma in temporary data dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import Settings, apply_offline_env, load_settings
from assistant.embedder import SentenceTransformerEmbedder

apply_offline_env()

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
