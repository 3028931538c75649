"""Request and response bodies of the HTTP API (the Answer itself is ``assistant.types.Answer``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from assistant.types import Turn


class AskRequest(BaseModel):
    """``POST /v1/ask`` and ``/v1/ask/stream``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The question; follow-ups are condensed with the history.")
    conversation_id: str | None = Field(default=None, description="Continue a stored conversation.")
    history: list[Turn] | None = Field(
        default=None, description="Earlier turns, instead of a stored conversation (stateless clients)."
    )
    include_retrieved: bool = Field(
        default=False,
        description="/v1/ask only: also return `retrieved`, the passages the answer was built from "
        "(the evaluation harness checks citations against them).",
    )


class Health(BaseModel):
    """``GET /healthz`` when ready."""

    status: str = "ok"
    model: str
    chunks: int = Field(description="Chunks in the index.")
    sources: int = Field(description="Source files in the index.")
