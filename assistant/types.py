"""Plain data types shared by the pipeline stages."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

SourceType = Literal["criterion", "platform", "manifest", "doc"]
SOURCE_TYPES: tuple[str, ...] = ("criterion", "platform", "manifest", "doc")
PLATFORMS: tuple[str, ...] = ("kserve", "ray-serve", "neutral")

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Passage:
    """What a loader yields: one retrievable unit of a source, before it gets an id."""

    text: str
    ref: str
    title: str
    locator: str
    source_type: SourceType
    platform: str = "neutral"
    meta: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chunk:
    """An indexed passage.

    ``ref`` is the human-facing id that answers cite: a criterion id (``review/rollback-unit``),
    a platform-doc section (``kserve/canary-rollout#promote-or-roll-back``), a manifest object
    (``RayService/deepseek-r1``) or a document section. ``locator`` is the section path of a
    passage or the object name of a manifest; field paths of manifests are in ``meta["fields"]``.
    """

    id: str
    text: str
    ref: str
    title: str
    locator: str
    source: str
    source_type: SourceType
    platform: str = "neutral"
    meta: dict[str, Scalar] = field(default_factory=dict)

    @classmethod
    def from_passage(cls, passage: Passage, source: str, source_hash: str, ordinal: int) -> Chunk:
        """Give a passage its id: stable for the same source content, new when it changes."""
        digest = hashlib.sha1(f"{source}\0{source_hash}\0{ordinal}\0{passage.ref}".encode()).hexdigest()[:20]
        return cls(
            id=digest,
            text=passage.text,
            ref=passage.ref,
            title=passage.title,
            locator=passage.locator,
            source=source,
            source_type=passage.source_type,
            platform=passage.platform,
            meta=dict(passage.meta),
        )

    def metadata(self) -> dict[str, Scalar]:
        """Flat metadata as the vector store keeps it."""
        return {
            "ref": self.ref,
            "title": self.title,
            "locator": self.locator,
            "source": self.source,
            "source_type": self.source_type,
            "platform": self.platform,
            **{f"m_{k}": v for k, v in self.meta.items()},
        }

    @classmethod
    def from_store(cls, chunk_id: str, text: str, metadata: dict[str, Any]) -> Chunk:
        """Rebuild a chunk from what the vector store returned."""
        meta = {k[2:]: v for k, v in metadata.items() if k.startswith("m_")}
        return cls(
            id=chunk_id,
            text=text,
            ref=str(metadata.get("ref", "")),
            title=str(metadata.get("title", "")),
            locator=str(metadata.get("locator", "")),
            source=str(metadata.get("source", "")),
            source_type=metadata.get("source_type", "doc"),
            platform=str(metadata.get("platform", "neutral")),
            meta=meta,
        )

    def fields(self) -> list[dict[str, str]]:
        """Manifest field paths and values this chunk summarises (empty for prose)."""
        raw = self.meta.get("fields")
        return json.loads(raw) if isinstance(raw, str) else []


@dataclass(slots=True)
class ScoredChunk:
    """A chunk with its final score and the score of every stage that saw it."""

    chunk: Chunk
    score: float
    stages: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view used by ``servewise search --json`` and the API."""
        c = self.chunk
        return {
            "id": c.id,
            "ref": c.ref,
            "score": round(self.score, 6),
            "title": c.title,
            "source": c.source,
            "source_type": c.source_type,
            "platform": c.platform,
            "locator": c.locator,
            "fields": c.fields(),
            "text": c.text,
            "stages": {k: round(v, 6) for k, v in self.stages.items()},
        }


class Citation(BaseModel):
    """A source an answer relied on: ``id`` is the criterion id, doc section or ``Kind/name``."""

    id: str
    title: str
    source: str
    locator: str
    text: str


class Answer(BaseModel):
    """The answer contract returned by the CLI (``ask --json``), the API and the eval harness."""

    answer: str
    recommendation: Literal["kserve", "ray-serve"] | None = None
    confidence: float = 0.0
    declined: bool = False
    citations: list[Citation] = []
    timings: dict[str, float] = {}
    model: str = ""
    conversation_id: str = ""


class Turn(BaseModel):
    """One message of a conversation."""

    role: Literal["user", "assistant"]
    content: str
