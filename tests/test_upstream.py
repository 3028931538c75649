"""Ingest the real third-party fixtures in ../shared: the seed and every upstream file."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from assistant.index import Index
from assistant.ingest.indexer import Ingestor
from assistant.retriever import Query
from assistant.search import Searcher
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, embedder):
    from tests.conftest import SHARED

    if not (SHARED / "upstream").is_dir():
        pytest.skip("../shared/upstream is not beside this checkout")
    settings = make_settings(tmp_path_factory.mktemp("upstream"))
    report = Ingestor.from_config(settings, embedder)([SHARED / "seed", SHARED / "upstream"])
    return settings, report


def test_every_object_is_listed_and_every_skip_has_a_reason(upstream):
    _, report = upstream
    kinds = Counter(o.split("/")[0] for f in report.files for o in f.objects)
    # The counts that upstream/README.md states for the 73 YAML documents.
    assert kinds == {
        "InferenceService": 29,
        "RayService": 9,
        "ClusterServingRuntime": 6,
        "ConfigMap": 6,
        "RayCluster": 5,
        "RayJob": 4,
        "InferenceGraph": 3,
        "LLMInferenceService": 3,
        "TrainedModel": 2,
        "Secret": 2,
        "LLMInferenceServiceConfig": 1,
        "Pod": 1,
        "Service": 1,
        "Deployment": 1,
    }
    skipped = {f.source.rsplit("/", 1)[-1]: f.reason for f in report.files if f.status == "skipped"}
    assert skipped == {
        name: f"unsupported file type '{name}'"
        for name in ("LICENSE-kserve", "LICENSE-kuberay", "LICENSE-ray")
    }
    assert all(f.status == "added" for f in report.files if f.status != "skipped")


def test_seed_and_docs_keep_section_paths(upstream, embedder):
    settings, _ = upstream
    chunks = Index.from_config(settings, embedder).store.get()
    seed = [c for c in chunks if c.source.endswith("kserve-vs-ray-serve.txt")]
    assert any(c.locator.endswith("Senior review questions") for c in seed)
    docs = [c for c in chunks if c.source_type == "doc" and "canary-example" in c.source]
    assert docs and all(" › " in c.locator or c.locator for c in docs)


def test_no_secret_value_survives(upstream, embedder):
    settings, _ = upstream
    index = Index.from_config(settings, embedder)
    secrets = [c for c in index.store.get() if c.meta.get("kind") == "Secret"]
    assert len(secrets) == 2 and all("<redacted>" in c.text for c in secrets)
    blob = "\n".join(c.text for c in index.store.get())
    assert not re.search(r"hf_[A-Za-z0-9]{16,}", blob)


def test_manifest_questions_find_upstream_objects(upstream, embedder):
    settings, _ = upstream
    searcher = Searcher.from_config(settings, embedder)
    hits = searcher(Query.parse("InferenceGraph splitter weights", source_types=["manifest"]), 3).hits
    assert hits[0].chunk.meta["kind"] == "InferenceGraph"
