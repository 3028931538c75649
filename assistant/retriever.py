"""Hybrid retrieval: dense (MiniLM in Chroma) and BM25, fused by reciprocal rank fusion."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from assistant.config import RetrievalSettings, Settings
from assistant.embedder import Embedder, SentenceTransformerEmbedder
from assistant.errors import InputError
from assistant.index import Index
from assistant.store import where_clause
from assistant.types import PLATFORMS, SOURCE_TYPES, ScoredChunk

MAX_QUERY_CHARS = 2000
TYPE_ALIASES = {
    "criteria": "criterion",
    "criterion": "criterion",
    "platform": "platform",
    "platform-doc": "platform",
    "manifest": "manifest",
    "manifests": "manifest",
    "doc": "doc",
    "docs": "doc",
}


@dataclass(slots=True)
class Query:
    """A search request; the retriever fills in the encodings so later stages can reuse them."""

    text: str
    source_types: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    dense: np.ndarray | None = None
    tokens: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        text: str,
        source_types: list[str] | tuple[str, ...] = (),
        platforms: list[str] | tuple[str, ...] = (),
    ) -> Query:
        """Validate user input into a query; bad values raise :class:`InputError`."""
        text = (text or "").strip()
        if not text:
            raise InputError("the query is empty")
        if len(text) > MAX_QUERY_CHARS:
            raise InputError(f"the query is {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        types = []
        for t in source_types:
            if t.lower() not in TYPE_ALIASES:
                raise InputError(f"unknown source type {t!r}; use one of {', '.join(SOURCE_TYPES)}")
            types.append(TYPE_ALIASES[t.lower()])
        for p in platforms:
            if p not in PLATFORMS:
                raise InputError(f"unknown platform {p!r}; use one of {', '.join(PLATFORMS)}")
        return cls(text, tuple(sorted(set(types))), tuple(sorted(set(platforms))))


def rrf(rankings: list[list[str]], k: int, weights: list[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion: sum of weight / (k + rank) over the rankings an id appears in."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


class HybridRetriever:
    """``retriever(query) -> list[ScoredChunk]``: fused candidates, best first."""

    def __init__(self, index: Index, embedder: Embedder, settings: RetrievalSettings) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings

    @classmethod
    def from_config(
        cls, settings: Settings, embedder: Embedder | None = None, index: Index | None = None
    ) -> HybridRetriever:
        """Open the index in the data dir and build the retriever over it."""
        embedder = embedder or SentenceTransformerEmbedder.from_config(settings.embedder)
        index = index or Index.from_config(settings, embedder)
        return cls(index.require(), embedder, settings.retrieval)

    def __call__(self, query: Query, limit: int | None = None) -> list[ScoredChunk]:
        return self.batch([query], limit)[0]

    def batch(self, queries: list[Query], limit: int | None = None) -> list[list[ScoredChunk]]:
        """Several queries with one encoder pass (``serve/`` batches concurrent requests)."""
        started = time.perf_counter()
        encoded = self.embedder.encode([q.text for q in queries])
        encode_ms = (time.perf_counter() - started) * 1000
        out = []
        for i, query in enumerate(queries):
            query.dense, query.tokens = encoded.dense[i], encoded.tokens[i]
            began = time.perf_counter()
            out.append(self._search(query, limit or self.settings.rerank_depth))
            query.timings["retrieve_ms"] = encode_ms + (time.perf_counter() - began) * 1000
        return out

    def _search(self, query: Query, limit: int) -> list[ScoredChunk]:
        rankings: list[list[str]] = []
        dense_scores: dict[str, float] = {}
        if self.settings.mode in ("hybrid", "dense"):
            where = where_clause(query.source_types, query.platforms)
            hits = self.index.store.query(query.dense, self.settings.candidates, where)
            rankings.append([cid for cid, _ in hits])
            dense_scores = dict(hits)
        lexical_scores: dict[str, float] = {}
        if self.settings.mode in ("hybrid", "lexical"):
            hits = self.index.lexical.search(
                query.text, self.settings.candidates, query.source_types, query.platforms
            )
            rankings.append([cid for cid, _ in hits])
            lexical_scores = dict(hits)
        fused = rrf(rankings, self.settings.rrf_k)
        top = sorted(fused, key=fused.get, reverse=True)[:limit]
        chunks = {c.id: c for c in self.index.store.get(top)}
        return [
            ScoredChunk(chunks[cid], fused[cid], _stages(cid, fused, dense_scores, lexical_scores))
            for cid in top
            if cid in chunks
        ]


def _stages(cid: str, fused: dict, dense: dict, lexical: dict) -> dict[str, float]:
    stages = {"rrf": fused[cid]}
    if cid in dense:
        stages["dense"] = dense[cid]
    if cid in lexical:
        stages["bm25"] = lexical[cid]
    return stages
