"""Retrieve then rerank: the search half of the pipeline, callable in-process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from assistant.config import Settings
from assistant.embedder import Embedder, SentenceTransformerEmbedder
from assistant.reranker import Reranker, build_reranker
from assistant.retriever import HybridRetriever, Query
from assistant.types import ScoredChunk


@dataclass(slots=True)
class SearchResult:
    """Ranked chunks and per-stage timings (ms)."""

    query: Query
    hits: list[ScoredChunk]

    def as_dict(self) -> dict:
        """JSON view for ``servewise search --json``."""
        return {
            "query": self.query.text,
            "filters": {"type": list(self.query.source_types), "platform": list(self.query.platforms)},
            "timings": {k: round(v, 2) for k, v in self.query.timings.items()},
            "results": [h.as_dict() for h in self.hits],
        }


class AsyncSearcher(Protocol):
    """What the answer pipeline needs: ``await searcher.asearch(query, k)``. :class:`Searcher` runs
    in-process; ``serve/`` provides one that calls the retriever and reranker deployments."""

    async def asearch(self, query: Query, k: int) -> SearchResult: ...


class Searcher:
    """``searcher(query, k) -> SearchResult``: hybrid retrieval followed by reranking."""

    def __init__(self, retriever: HybridRetriever, reranker: Reranker, top_k: int = 5) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.top_k = top_k

    @classmethod
    def from_config(
        cls, settings: Settings, embedder: Embedder | None = None, reranker: str | None = None
    ) -> Searcher:
        """Build retriever and reranker over the index in the data dir."""
        embedder = embedder or SentenceTransformerEmbedder.from_config(settings.embedder)
        retriever = HybridRetriever.from_config(settings, embedder)
        return cls(retriever, build_reranker(settings, embedder, reranker), settings.retrieval.top_k)

    def __call__(self, query: Query | str, k: int | None = None) -> SearchResult:
        query = Query.parse(query) if isinstance(query, str) else query
        k = k or self.top_k
        candidates = self.retriever(query, limit=max(k, self.retriever.settings.rerank_depth))
        return SearchResult(query, self.reranker(query, candidates, k))

    async def asearch(self, query: Query, k: int) -> SearchResult:
        """:meth:`__call__` in a worker thread, so an event loop serving other streams is not blocked."""
        return await asyncio.to_thread(self, query, k)
