"""``POST /v1/feedback``: a thumbs up/down on an answer, kept by the
:class:`~assistant.feedback.FeedbackStore` on ``app.state.feedback`` (503 when the app has none).

``serve/api.py`` includes :data:`router` behind the bearer-token dependency.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from assistant.errors import StoreError
from assistant.feedback import MAX_COMMENT_CHARS, FeedbackStore
from assistant.types import Answer

router = APIRouter(tags=["feedback"])


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str = Field(description="The conversation whose answer is rated.")
    rating: Literal["up", "down"]
    comment: str = Field(default="", description=f"Free text, at most {MAX_COMMENT_CHARS} characters.")
    answer: Answer | None = Field(
        default=None,
        description="The Answer JSON the client showed: rates that answer (matched by its text) rather "
        "than the latest, and lets an export propose gold labels from it.",
    )
    source: str = Field(default="api", description="Who recorded it: api, gradio, slack, ...")


class FeedbackReceipt(BaseModel):
    """What ``POST /v1/feedback`` answers (201)."""

    id: str
    conversation_id: str
    rating: Literal["up", "down"]
    at: datetime


@router.post("/v1/feedback", status_code=201, response_model=FeedbackReceipt)
def feedback(body: FeedbackRequest, request: Request) -> FeedbackReceipt:
    """Record a rating of the conversation's latest answer (or of ``answer``). A plain ``def``:
    FastAPI runs it in its thread pool, so SQLite never blocks the event loop."""
    store: FeedbackStore | None = getattr(request.app.state, "feedback", None)
    if store is None:
        raise StoreError("feedback is not enabled on this server (no feedback store configured)")
    fb = store.record(body.conversation_id, body.rating, body.comment, body.answer, body.source)
    return FeedbackReceipt(id=fb.id, conversation_id=fb.conversation_id, rating=fb.rating, at=fb.at)
