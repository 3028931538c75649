"""Where the harness's answers come from: the pipeline in this process, or a running ServeWise over HTTP.

Both return an :class:`Outcome` per item: the Answer JSON and the passages it was built from, or the
reason the item was skipped or failed. A failure of one item never stops the run; it is reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from assistant.config import Settings
from assistant.conversations import Conversations
from assistant.embedder import Embedder
from assistant.errors import EndpointError, ServeWiseError
from assistant.generator import Generator
from assistant.pipeline import Assistant
from assistant.search import Searcher
from eval.dataset import EvalItem


@dataclass
class Outcome:
    """One item's result: an answer (with ``retrieved``), an ``error`` or a ``skipped`` reason."""

    id: str
    answer: dict[str, Any] | None = None
    retrieved: list[dict[str, Any]] | None = None
    error: str | None = None
    skipped: str | None = None
    replaced: str | None = None


class Answerer(Protocol):
    """Answers one dataset item."""

    async def __call__(self, item: EvalItem) -> Outcome: ...

    async def close(self) -> None: ...


class SkipItem(Exception):
    """The item cannot be answered by this answerer (the message says why)."""


class InProcessAnswerer:
    """The ``Assistant`` pipeline in this process, over the index in the data dir.

    Conversations go to a scratch store in ``workdir``: an evaluation never writes to the data dir.
    Items with a ``corpus`` get a fresh data dir in ``workdir`` holding the indexed sources plus that path.
    """

    def __init__(
        self, settings: Settings, generator: Generator, embedder: Embedder, workdir: Path, base_dir: Path
    ) -> None:
        self.settings = settings
        self.generator = generator
        self.embedder = embedder
        self.workdir = workdir
        self.base_dir = base_dir
        self._assistants: dict[str | None, Assistant] = {}
        self._lock = asyncio.Lock()

    async def __call__(self, item: EvalItem) -> Outcome:
        try:
            assistant = await self._assistant(item.corpus)
        except SkipItem as exc:
            return Outcome(item.id, skipped=str(exc))
        events: dict[str, dict[str, Any]] = {}
        try:
            async for event in assistant.stream(item.question, history=list(item.history)):
                events[event["type"]] = event
        except ServeWiseError as exc:
            return Outcome(item.id, error=f"{exc.code}: {exc}")
        answer = events["answer"]["answer"].model_dump(mode="json")
        replaced = events.get("replaced", {}).get("reason")
        return Outcome(
            item.id, answer=answer, retrieved=events["answer"].get("retrieved", []), replaced=replaced
        )

    async def close(self) -> None:
        self._assistants.clear()

    async def _assistant(self, corpus: str | None) -> Assistant:
        async with self._lock:
            if corpus not in self._assistants:
                settings = self.settings if corpus is None else await self._fresh_index(corpus)
                self._assistants[corpus] = self._build(settings)
            return self._assistants[corpus]

    def _build(self, settings: Settings) -> Assistant:
        searcher = Searcher.from_config(settings, self.embedder)
        name = hashlib.sha1(str(settings.data_dir).encode()).hexdigest()[:8]
        conversations = Conversations(self.workdir / f"conversations-{name}.sqlite")
        return Assistant(settings, searcher, self.generator, conversations)

    async def _fresh_index(self, corpus: str) -> Settings:
        """A new embedded index in ``workdir``: what the data dir indexes, plus ``corpus``."""
        path = resolve_corpus(corpus, self.base_dir)
        data_dir = self.workdir / ("index-" + hashlib.sha1(str(path).encode()).hexdigest()[:8])
        settings = self.settings.model_copy(
            update={
                "data_dir": data_dir,
                "store": self.settings.store.model_copy(update={"chroma_url": None}),
                "ingest": self.settings.ingest.model_copy(update={"progress": False}),
            }
        )
        sources = [*indexed_sources(self.settings.data_dir), path]
        from assistant.ingest.indexer import Ingestor

        await asyncio.to_thread(Ingestor.from_config(settings, self.embedder), sources)
        return settings


def resolve_corpus(corpus: str, base_dir: Path) -> Path:
    """The corpus path as written (relative to the working directory), else relative to the dataset."""
    for candidate in (Path(corpus), base_dir / corpus):
        if candidate.exists():
            return candidate.resolve()
    raise SkipItem(f"corpus {corpus} not found (looked in . and {base_dir})")


def indexed_sources(data_dir: Path) -> list[Path]:
    """The source files the data dir's index was built from (those that still exist)."""
    manifest = Path(data_dir) / "manifest.json"
    if not manifest.is_file():
        return []
    sources = json.loads(manifest.read_text(encoding="utf-8")).get("sources", {})
    return [Path(s) for s in sources if Path(s).is_file()]


class HttpAnswerer:
    """A running ServeWise: ``POST /v1/ask`` with ``include_retrieved``, stateless (history sent)."""

    def __init__(self, endpoint: str, token: str | None = None, timeout_s: float = 300.0) -> None:
        import httpx

        self.endpoint = endpoint.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        self._client = httpx.AsyncClient(base_url=self.endpoint, headers=headers, timeout=timeout_s)

    async def check(self) -> str:
        """The server's model name; :class:`EndpointError` when it is unreachable or not ready."""
        try:
            health = await self._client.get("/healthz")
        except self._httpx.HTTPError as exc:
            raise EndpointError(f"cannot reach {self.endpoint}: {exc or type(exc).__name__}") from exc
        if health.status_code != 200:
            raise EndpointError(f"{self.endpoint} is not ready: HTTP {health.status_code} {message(health)}")
        return str(health.json().get("model", ""))

    async def __call__(self, item: EvalItem) -> Outcome:
        if item.corpus:
            return Outcome(
                item.id, skipped="items with a corpus need an in-process run (the server has its own index)"
            )
        body = {
            "question": item.question,
            "history": [turn.model_dump() for turn in item.history],
            "include_retrieved": True,
        }
        try:
            response = await self._client.post("/v1/ask", json=body)
        except self._httpx.HTTPError as exc:
            return Outcome(item.id, error=f"request failed: {exc or type(exc).__name__}")
        if response.status_code != 200:
            return Outcome(item.id, error=f"HTTP {response.status_code}: {message(response)}")
        answer = response.json()
        return Outcome(item.id, answer=answer, retrieved=answer.pop("retrieved", None))

    async def close(self) -> None:
        await self._client.aclose()


def message(response: Any) -> str:
    """The error message of a ServeWise error body, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
