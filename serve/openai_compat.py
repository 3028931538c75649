"""OpenAI-compatible ``/v1/chat/completions``: the ``openai`` client and LangChain's ``ChatOpenAI``
work against ServeWise.

The last message must come from the user; earlier user and assistant messages are the history;
system messages are ignored (ServeWise's own rules apply). The reply carries an extra top-level
field ``servewise`` with the rest of the Answer (recommendation, confidence, declined, citations,
timings, conversation_id). When verification replaces a streamed draft, the stream continues with
a marked, grounded replacement; the final chunk's ``servewise.answer`` is the authoritative text.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.errors import InputError
from assistant.types import Answer, Turn
from serve.errors import error_body

MODEL = "servewise"


class ChatMessage(BaseModel):
    """One OpenAI chat message (text content only)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields ServeWise uses; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = MODEL
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "".join(part.get("text", "") for part in message.content if part.get("type") == "text")
    return message.content or ""


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    """The question (last user message) and the earlier turns."""
    if messages[-1].role != "user":
        raise InputError("the last message must have role 'user'")
    history = [
        Turn(role=m.role, content=_text(m))
        for m in messages[:-1]
        if m.role in ("user", "assistant") and _text(m)
    ]
    return _text(messages[-1]), history


def extra(answer: Answer) -> dict[str, Any]:
    """The ``servewise`` field: everything in the Answer but its text."""
    return answer.model_dump(mode="json")


def completion(answer: Answer) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer.answer}, "finish_reason": "stop"}
        ],
        "usage": None,
        "servewise": extra(answer),
    }


def _chunk(cid: str, delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **more,
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _delta(event: dict[str, Any], streamed: bool) -> str | None:
    """The text a pipeline event adds to the stream (None for nothing)."""
    if event["type"] == "token":
        return event["text"]
    if event["type"] == "replaced":
        return f"\n\n[ServeWise replaced the draft above ({event['reason']}); grounded answer:]\n\n"
    answer: Answer = event["answer"]
    composed = answer.declined or answer.model.endswith("(composed)")
    return answer.answer if composed or not streamed else None


async def completion_chunks(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """``chat.completion.chunk`` server-sent events, ending with ``data: [DONE]``; errors after the
    first byte are reported in-band as an ``error`` object."""
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    yield _chunk(cid, {"role": "assistant", "content": ""})
    streamed = False
    try:
        async for event in _chain(first, rest):
            text = _delta(event, streamed)
            streamed = streamed or event["type"] == "token"
            if text:
                yield _chunk(cid, {"content": text})
            if event["type"] == "answer":
                yield _chunk(cid, {}, "stop", servewise=extra(event["answer"]))
    except Exception as exc:
        code = getattr(exc, "code", "internal_error")
        yield f"data: {json.dumps(error_body(code, str(exc) or type(exc).__name__))}\n\n"
    yield "data: [DONE]\n\n"


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event
