"""Hybrid retrieval and reranking over the bundled corpus, with the real model and Chroma."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from assistant.embedder import SentenceTransformerEmbedder, native_bfloat16
from assistant.errors import ConfigError, IndexNotFoundError, InputError, ModelLoadError
from assistant.reranker import CrossEncoderReranker, MaxSimReranker, maxsim
from assistant.retriever import Query, rrf
from assistant.search import Searcher
from eval.retrieval import evaluate, load_items
from tests.conftest import ROOT, make_settings

#: Measured on the 58-item set: hybrid + MaxSim gives recall@5 0.931 (see README, bench/retrieval.py).
RECALL_AT_5 = 0.9


@pytest.fixture(scope="module")
def searcher(corpus_index, embedder) -> Searcher:
    return Searcher.from_config(corpus_index, embedder)


def refs(searcher: Searcher, text: str, k: int = 5, **filters) -> list[str]:
    return [h.chunk.ref for h in searcher(Query.parse(text, **filters), k).hits]


def test_recall_at_5_on_the_labelled_set(searcher):
    items = load_items(ROOT / "eval/datasets/retrieval-dev.yaml")
    assert len(items) >= 40
    report = evaluate(lambda q, k: refs(searcher, q, k), items)
    assert report.recall >= RECALL_AT_5, report.misses


def test_ownership_question_puts_the_ownership_criterion_first(searcher):
    assert refs(searcher, "who should own the serving contract")[0] == "review/contract-owner"


def test_type_and_platform_filters(searcher):
    hits = searcher(Query.parse("GPU tensor parallel", source_types=["manifest"]), 5).hits
    assert hits and all(h.chunk.source_type == "manifest" for h in hits)
    hits = searcher(Query.parse("autoscaling", platforms=["ray-serve"]), 5).hits
    assert hits and all(h.chunk.platform == "ray-serve" for h in hits)


def test_manifest_hits_carry_field_paths(searcher):
    [hit] = searcher(Query.parse("deepseek tensor parallel size 8", source_types=["manifest"]), 1).hits
    assert hit.chunk.ref == "RayService/deepseek-r1"
    paths = [f["path"] for f in hit.chunk.fields()]
    assert any("serveConfigV2:" in p and p.endswith("engine_kwargs.tensor_parallel_size") for p in paths)


def test_search_records_stage_scores_and_timings(searcher):
    result = searcher(Query.parse("scale to zero"), 3)
    assert {"rrf", "maxsim"} <= set(result.hits[0].stages)
    assert result.query.timings["retrieve_ms"] > 0 and "rerank_ms" in result.query.timings


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("   ", {}, "empty"),
        ("x" * 2001, {}, "limit is 2000"),
        ("ok", {"source_types": ["pdf"]}, "unknown source type"),
        ("ok", {"platforms": ["seldon"]}, "unknown platform"),
    ],
)
def test_bad_queries_are_rejected_clearly(text, kwargs, message):
    with pytest.raises(InputError, match=message):
        Query.parse(text, **kwargs)


def test_searching_an_empty_data_dir_says_what_to_do(tmp_path, embedder):
    with pytest.raises(IndexNotFoundError, match="servewise ingest"):
        Searcher.from_config(make_settings(tmp_path), embedder)


def test_rrf_and_maxsim_math():
    fused = rrf([["a", "b"], ["b", "c"]], k=1)
    assert max(fused, key=fused.get) == "b"
    q = np.eye(3, dtype=np.float32)[:2]
    assert maxsim(q, np.eye(3, dtype=np.float32)) == pytest.approx(1.0)
    assert maxsim(q, np.zeros((0, 3), dtype=np.float32)) == 0.0


def test_maxsim_reranker_uses_stored_tokens(corpus_index, embedder, searcher):
    reranker = MaxSimReranker.from_config(corpus_index, embedder)
    query = Query.parse("what is the rollback unit")
    candidates = searcher.retriever(query, limit=10)
    ranked = reranker(query, candidates, 3)
    assert len(ranked) == 3 and all("maxsim" in h.stages for h in ranked)


def test_cross_encoder_code_path(tmp_path, corpus_index, embedder, searcher):
    """No cross-encoder with packaged weights exists: build one from MiniLM (untrained head)."""
    from sentence_transformers import CrossEncoder

    from assistant.embedder import packaged_model_path

    CrossEncoder(packaged_model_path(), num_labels=1, device="cpu").save(str(tmp_path / "ce"))
    settings = corpus_index.model_copy(
        update={
            "reranker": corpus_index.reranker.model_copy(
                update={"kind": "cross-encoder", "model_dir": str(tmp_path / "ce")}
            )
        }
    )
    reranker = CrossEncoderReranker.from_config(settings)
    query = Query.parse("canary rollout")
    ranked = reranker(query, searcher.retriever(query, limit=8), 4)
    assert len(ranked) == 4 and all("cross-encoder" in h.stages for h in ranked)


def test_cross_encoder_misconfiguration(corpus_index, tmp_path):
    settings = corpus_index.model_copy(
        update={"reranker": corpus_index.reranker.model_copy(update={"kind": "cross-encoder"})}
    )
    with pytest.raises(ConfigError, match="model_dir"):
        CrossEncoderReranker.from_config(settings)
    with pytest.raises(ModelLoadError, match="not found"):
        CrossEncoderReranker(str(tmp_path / "missing"))


def test_langchain_adapter_composes_with_lcel(searcher):
    from langchain_core.runnables import RunnableLambda

    from assistant.integrations.langchain import ServeWiseRetriever

    retriever = ServeWiseRetriever(searcher=searcher, k=2, source_types=["criterion"])
    chain = retriever | RunnableLambda(lambda docs: [d.metadata["ref"] for d in docs])
    out = chain.invoke("what is the rollback unit?")
    assert out[0] == "review/rollback-unit" and len(out) == 2


def test_cli_search_json(corpus_index):
    cmd = [
        sys.executable,
        "-m",
        "assistant.cli",
        "--data-dir",
        str(corpus_index.data_dir),
        "search",
        "who should own the serving contract",
        "--json",
        "-k",
        "3",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    data = json.loads(out.stdout)
    assert data["results"][0]["ref"] == "review/contract-owner"
    assert {"id", "score", "source", "locator", "fields", "text"} <= set(data["results"][0])


def test_cli_errors_are_one_line(tmp_path):
    cmd = [sys.executable, "-m", "assistant.cli", "--data-dir", str(tmp_path), "search", "hello"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: no index in") and "Traceback" not in out.stderr


def test_bfloat16_and_float32_encoders_agree(embedder):
    """The default ``auto`` picks bfloat16 only where the CPU computes it natively; either way the
    vectors match float32 ones closely enough for one index to serve both."""
    texts = ["How do canary rollouts work on KServe?", "spec.predictor.canaryTrafficPercent"]
    full = SentenceTransformerEmbedder(embedder.model_path, dtype="float32")
    half = SentenceTransformerEmbedder(embedder.model_path, dtype="bfloat16")
    a, b = full.encode(texts), half.encode(texts)
    assert not full._bfloat16 and half._bfloat16
    assert b.dense.dtype == np.float32 and (a.dense * b.dense).sum(axis=1).min() > 0.9995
    assert all((x * y).sum(axis=1).min() > 0.999 for x, y in zip(a.tokens, b.tokens, strict=True))
    assert np.allclose(half.embed_batch(texts), b.dense, atol=1e-2)
    assert embedder._bfloat16 == native_bfloat16()
