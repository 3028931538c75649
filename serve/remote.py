"""The ingress side of the graph: the pipeline's searcher and generator, backed by deployment handles.

Errors from other replicas enter here and are translated once: a ServeWise error raised in a
replica is re-raised as itself; back-pressure becomes :class:`OverloadedError`; a dead replica or
anything else becomes the stage's own error with a one-line message (never a remote traceback).
Serve's overhead (handle round trips minus the deployments' own time) is metered per request.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from assistant.errors import GenerationError, OverloadedError, ServeWiseError, StoreError
from assistant.generator import GenerationParams, Messages, one_line
from assistant.retriever import Query
from assistant.search import SearchResult
from assistant.types import ScoredChunk
from serve.metrics import Metrics


@dataclass(slots=True)
class StageResult:
    """What the retriever and reranker deployments return: the query (with its encodings and
    timings filled in), the hits, the milliseconds the deployment spent on the call's batch, the
    milliseconds the call waited in the batch queue before it (part of the hop's wait), and the
    wall-clock time (``time.time()``) the call reached the deployment's method."""

    query: Query
    hits: list[ScoredChunk]
    busy_ms: float
    queued_ms: float = 0.0
    arrived_at: float = 0.0


@dataclass
class Meter:
    """Per request: Serve's own time per hop (deployment name -> ms), the part of it spent in a
    batch queue, the hop's wait split into ``to_<stage>`` (the ingress's call until the replica's
    method runs) and ``back_<stage>`` (the batch's end until the reply is back), and the tokens
    generated. The split compares wall clocks: exact on one machine, off by the clock offset when
    the replica runs on another node."""

    tokens: int = 0
    by_stage: dict[str, float] = field(default_factory=dict)
    queued: dict[str, float] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)

    @property
    def overhead_ms(self) -> float:
        """Serve's own time over all hops."""
        return sum(self.by_stage.values())


#: The current request's meter (each request runs in its own task, with its own context).
METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("servewise_meter", default=None)


def _meter() -> Meter:
    return METER.get() or Meter()


def record_wait(metrics: Metrics, deployment: str, wait_ms: float) -> Meter:
    """Count one hop's wait in the metrics and in this request's meter (returned)."""
    metrics.queue_wait.labels(deployment).observe(wait_ms / 1000)
    meter = _meter()
    meter.by_stage[deployment] = wait_ms
    return meter


def translate(exc: BaseException, stage: str, fallback: type[ServeWiseError]) -> ServeWiseError:
    """The ServeWise error for an exception that came back from a deployment."""
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, ServeWiseError):
        return type(cause)(str(cause))
    if isinstance(cause, BackPressureError):
        return OverloadedError(f"the {stage} is overloaded; retry in a few seconds")
    if isinstance(cause, RayActorError):
        return fallback(f"the {stage} replica is unavailable: {one_line(cause)}")
    return fallback(f"the {stage} failed: {type(cause).__name__}: {one_line(cause)}")


async def call(response: Any, stage: str, fallback: type[ServeWiseError]) -> Any:
    """Await a handle response, translating its errors."""
    try:
        return await response
    except (RayTaskError, RayActorError, BackPressureError) as exc:
        raise translate(exc, stage, fallback) from exc


class RemoteSearcher:
    """``asearch`` over the Retriever and Reranker deployments (each batches concurrent calls)."""

    def __init__(self, retriever: DeploymentHandle, reranker: DeploymentHandle, depth: int, metrics: Metrics):
        self.retriever = retriever
        self.reranker = reranker
        self.depth = depth
        self.metrics = metrics

    async def asearch(self, query: Query, k: int) -> SearchResult:
        """Retrieve ``depth`` candidates, rerank to ``k``."""
        found = await self._stage("Retriever", self.retriever.search, (query, max(k, self.depth)))
        ranked = await self._stage("Reranker", self.reranker.rerank, (found.query, found.hits, k))
        return SearchResult(ranked.query, ranked.hits)

    async def _stage(self, name: str, method: Any, request: tuple) -> StageResult:
        started, sent = time.perf_counter(), time.time()
        result: StageResult = await call(method.remote(request), name.lower(), StoreError)
        wait = max(0.0, (time.perf_counter() - started) * 1000 - result.busy_ms)
        meter = record_wait(self.metrics, name, wait)
        meter.queued[name] = result.queued_ms
        if result.arrived_at:
            to = min(wait, max(0.0, (result.arrived_at - sent) * 1000))
            meter.split[f"to_{name}"] = to
            meter.split[f"back_{name}"] = max(0.0, wait - to - result.queued_ms)
        return result


class RemoteGenerator:
    """``Generator.stream`` over the Generator deployment, which streams text in small chunks and
    ends with ``{"busy_ms", "tokens"}``."""

    def __init__(self, handle: DeploymentHandle, name: str, metrics: Metrics) -> None:
        self.handle = handle.options(stream=True)
        self.name = name
        self.metrics = metrics

    async def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[str]:
        """Yield text chunks; meter the time Serve added around the model."""
        started, stats = time.perf_counter(), {"busy_ms": 0.0, "tokens": 0}
        chunks = self.handle.stream.remote(messages, params)
        try:
            async for item in chunks:
                if isinstance(item, dict):
                    stats = item
                else:
                    yield item
        except (RayTaskError, RayActorError, BackPressureError) as exc:
            raise translate(exc, "generator", GenerationError) from exc
        except (asyncio.CancelledError, GeneratorExit):  # the client went away: stop the model too
            chunks.cancel()
            raise
        wait = max(0.0, (time.perf_counter() - started) * 1000 - stats["busy_ms"])
        record_wait(self.metrics, "Generator", wait).tokens += stats["tokens"]
