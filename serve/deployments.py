"""Thin Serve deployments over the pipeline stages in ``assistant/``: each builds its stage with
``from_config`` and adapts calls; no pipeline logic lives here.

* ``Retriever``: hybrid retrieval; ``@serve.batch`` embeds concurrent queries in one encoder pass.
* ``Reranker``: MaxSim (or the configured reranker), batched the same way.
  Both report each call's time in their batch queue (``queued_ms``), so the ingress can tell
  queueing behind other requests from the cost of the hop itself.
* ``Generator``: vLLM's async engine in the replica; streams text in chunks at most every
  ``serve.stream_interval_ms``, less often when many streams are in flight
  (``serve.stream_chunks_per_s`` over all of them: each streamed item is a Ray hop), then its own
  timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ray import serve

from assistant.config import Settings, apply_offline_env
from assistant.embedder import SentenceTransformerEmbedder
from assistant.generator import GenerationParams, Messages, build_generator
from assistant.index import Index
from assistant.reranker import build_reranker
from assistant.retriever import HybridRetriever, Query
from assistant.types import ScoredChunk
from serve.remote import StageResult


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def chunk_interval_s(active: int, floor_s: float, chunks_per_s: float) -> float:
    """Seconds between one stream's chunks: ``floor_s``, or longer when ``active`` streams would
    together send more than ``chunks_per_s`` chunks a second."""
    return max(floor_s, active / chunks_per_s)


@serve.deployment(name="Retriever")
class RetrieverDeployment:
    """``search((query, limit)) -> StageResult``; concurrent calls share one encoder pass."""

    def __init__(self, settings: Settings) -> None:
        apply_offline_env()
        embedder = SentenceTransformerEmbedder.from_config(settings.embedder)
        self.index = Index.from_config(settings, embedder).require()
        self.retriever = HybridRetriever.from_config(settings, embedder, self.index)
        self.retriever.batch([Query.parse("warm up the encoder and the indexes")], 1)
        batch = settings.serve.retriever_batch
        self._search.set_max_batch_size(batch.max_batch_size)
        self._search.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)

    async def search(self, request: tuple[Query, int]) -> StageResult:
        """One ``(query, limit)``, batched with whatever else is queued."""
        return await self._search((request, time.time()))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _search(self, requests: list[tuple[tuple[Query, int], float]]) -> list[StageResult]:
        started, clock = time.time(), time.perf_counter()
        queries = [q for (q, _), _ in requests]
        found = await asyncio.to_thread(self.retriever.batch, queries, max(n for (_, n), _ in requests))
        busy = _ms_since(clock)
        return [
            StageResult(q, hits[:n], busy, (started - arrived) * 1000, arrived)
            for ((q, n), arrived), hits in zip(requests, found, strict=True)
        ]

    def info(self) -> dict[str, int]:
        """Index size, for the health check."""
        return {"sources": len(self.index.manifest.sources), "chunks": len(self.index.manifest.chunk_ids())}


@serve.deployment(name="Reranker")
class RerankerDeployment:
    """``rerank((query, candidates, k)) -> StageResult``."""

    def __init__(self, settings: Settings) -> None:
        apply_offline_env()
        embedder = SentenceTransformerEmbedder.from_config(settings.embedder)
        self.reranker = build_reranker(settings, embedder)
        batch = settings.serve.reranker_batch
        self._rerank.set_max_batch_size(batch.max_batch_size)
        self._rerank.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)

    async def rerank(self, request: tuple[Query, list[ScoredChunk], int]) -> StageResult:
        """One ``(query, candidates, k)``, batched with whatever else is queued."""
        return await self._rerank((request, time.time()))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _rerank(
        self, requests: list[tuple[tuple[Query, list[ScoredChunk], int], float]]
    ) -> list[StageResult]:
        started, clock = time.time(), time.perf_counter()
        ranked = await asyncio.to_thread(lambda: [self.reranker(q, c, k) for (q, c, k), _ in requests])
        busy = _ms_since(clock)
        return [  # the ingress needs no vectors back: the reply stays small
            StageResult(replace(q, dense=None, tokens=None), hits, busy, (started - arrived) * 1000, arrived)
            for ((q, _, _), arrived), hits in zip(requests, ranked, strict=True)
        ]


@serve.deployment(name="Generator")
class GeneratorDeployment:
    """``stream(messages, params)`` yields text chunks, then ``{"busy_ms", "tokens"}``."""

    async def __init__(self, settings: Settings) -> None:
        apply_offline_env()
        self.generator = build_generator(settings)
        self.floor_s = settings.serve.stream_interval_ms / 1000
        self.chunks_per_s = settings.serve.stream_chunks_per_s
        self.active = 0  # streams in flight (the replica's user code runs on one event loop)
        await self.generator.start()

    async def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[Any]:
        """The first delta at once, later ones gathered for :func:`chunk_interval_s` seconds."""
        started, last, parts, tokens = time.perf_counter(), 0.0, [], 0
        self.active += 1
        try:
            async for delta in self.generator.stream(messages, params):
                parts.append(delta)
                tokens += 1
                if time.perf_counter() - last >= chunk_interval_s(
                    self.active, self.floor_s, self.chunks_per_s
                ):
                    yield "".join(parts)
                    parts.clear()
                    last = time.perf_counter()
        finally:
            self.active -= 1
        if parts:
            yield "".join(parts)
        yield {"busy_ms": _ms_since(started), "tokens": tokens}

    async def check(self) -> str:
        """The model name, once the engine answers (raises otherwise)."""
        await self.generator.check()
        return self.generator.name

    async def __del__(self) -> None:
        await self.generator.close()
