"""Second-stage reranking of the fused candidates.

- :class:`MaxSimReranker` (default): late interaction over MiniLM token embeddings. Every query
  token is matched to its most similar token in the passage (ColBERT's MaxSim) using the token
  vectors stored at ingest, so no new weights and no model call per candidate.
- :class:`CrossEncoderReranker`: any local sentence-transformers cross-encoder directory.
  No cross-encoder with packaged weights exists on PyPI, so it is opt-in.
- :class:`NoReranker`: keeps the first-stage order.

Rerankers blend their own order with the first-stage order by weighted reciprocal rank fusion
(``reranker.fusion_weight``), which proved more robust than trusting either order alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np
from threadpoolctl import ThreadpoolController

from assistant.config import Settings
from assistant.embedder import Embedder
from assistant.errors import BackendMissingError, ConfigError, ModelLoadError
from assistant.retriever import Query, rrf
from assistant.tokenstore import TokenStore
from assistant.types import ScoredChunk

_BLAS = ThreadpoolController()


class Reranker(Protocol):
    """Reorders candidates for a query and returns the best ``top_k``."""

    name: str

    def __call__(self, query: Query, candidates: list[ScoredChunk], top_k: int) -> list[ScoredChunk]: ...


def blend(
    candidates: list[ScoredChunk], scores: np.ndarray, stage: str, weight: float, top_k: int, rrf_k: int = 60
) -> list[ScoredChunk]:
    """Fuse the first-stage order with the order of ``scores`` and keep the top ``top_k``."""
    first = [c.chunk.id for c in candidates]
    order = np.argsort(-scores, kind="stable")
    second = [first[i] for i in order]
    fused = rrf([first, second], rrf_k, [1.0 - weight, weight])
    for cand, score in zip(candidates, scores, strict=True):
        cand.stages[stage] = float(score)
        cand.score = fused[cand.chunk.id]
    return sorted(candidates, key=lambda c: c.score, reverse=True)[:top_k]


def maxsim(query_tokens: np.ndarray, doc_tokens: np.ndarray) -> float:
    """Mean over query tokens of the best cosine similarity with any document token."""
    if not len(query_tokens) or not len(doc_tokens):
        return 0.0
    return float((query_tokens @ doc_tokens.T).max(axis=1).mean())


class MaxSimReranker:
    """Late-interaction reranker over token embeddings stored at ingest."""

    name = "maxsim"

    def __init__(self, tokens: TokenStore, embedder: Embedder, fusion_weight: float = 0.5) -> None:
        self.tokens = tokens
        self.embedder = embedder
        self.fusion_weight = fusion_weight

    @classmethod
    def from_config(cls, settings: Settings, embedder: Embedder) -> MaxSimReranker:
        """Open the token store in the data dir."""
        store = TokenStore(Path(settings.data_dir) / "tokens.sqlite")
        return cls(store, embedder, settings.reranker.fusion_weight)

    def __call__(self, query: Query, candidates: list[ScoredChunk], top_k: int) -> list[ScoredChunk]:
        started = time.perf_counter()
        if query.tokens is None:
            query.tokens = self.embedder.encode([query.text]).tokens[0]
        stored = self.tokens.get([c.chunk.id for c in candidates])
        empty = np.zeros((0, query.tokens.shape[1]), dtype=np.float32)
        # One BLAS thread: idle OpenBLAS threads otherwise spin and slow the next query's encoder.
        with _BLAS.limit(limits=1, user_api="blas"):
            scores = np.array([maxsim(query.tokens, stored.get(c.chunk.id, empty)) for c in candidates])
        ranked = blend(candidates, scores, self.name, self.fusion_weight, top_k)
        query.timings["rerank_ms"] = (time.perf_counter() - started) * 1000
        return ranked


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder from a local directory."""

    name = "cross-encoder"

    def __init__(self, model_dir: str, fusion_weight: float = 0.5) -> None:
        if not Path(model_dir).is_dir():
            raise ModelLoadError(f"cross-encoder directory not found: {model_dir}")
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise BackendMissingError("The cross-encoder reranker", "sentence-transformers") from exc
        try:
            self.model = CrossEncoder(model_dir, device="cpu")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load cross-encoder from {model_dir}: {exc}") from exc
        self.fusion_weight = fusion_weight

    @classmethod
    def from_config(cls, settings: Settings) -> CrossEncoderReranker:
        """Requires ``reranker.model_dir``."""
        if not settings.reranker.model_dir:
            raise ConfigError("reranker.kind is 'cross-encoder' but reranker.model_dir is not set")
        return cls(settings.reranker.model_dir, settings.reranker.fusion_weight)

    def __call__(self, query: Query, candidates: list[ScoredChunk], top_k: int) -> list[ScoredChunk]:
        started = time.perf_counter()
        pairs = [(query.text, c.chunk.text) for c in candidates]
        scores = np.asarray(self.model.predict(pairs), dtype=np.float32) if pairs else np.zeros(0)
        ranked = blend(candidates, scores, self.name, self.fusion_weight, top_k)
        query.timings["rerank_ms"] = (time.perf_counter() - started) * 1000
        return ranked


class NoReranker:
    """Keeps the first-stage order."""

    name = "none"

    def __call__(self, query: Query, candidates: list[ScoredChunk], top_k: int) -> list[ScoredChunk]:
        query.timings["rerank_ms"] = 0.0
        return candidates[:top_k]


def build_reranker(settings: Settings, embedder: Embedder, kind: str | None = None) -> Reranker:
    """The reranker named by ``reranker.kind`` (or ``kind``)."""
    kind = kind or settings.reranker.kind
    if kind == "maxsim":
        return MaxSimReranker.from_config(settings, embedder)
    if kind == "cross-encoder":
        return CrossEncoderReranker.from_config(settings)
    return NoReranker()
