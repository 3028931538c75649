"""The HTTP layer (serve/api.py) in-process, with a scripted backend at the seam: status codes,
error bodies, auth, admission, body limits, SSE and the OpenAI-compatible shapes. The real graph
behind these routes is exercised over real HTTP in test_serve_e2e.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from assistant.errors import GenerationError, ModelLoadError, NotFoundError
from assistant.serve_settings import ServeSettings
from assistant.types import Answer, Citation
from serve.api import create_api
from serve.schemas import Health

CITATION = Citation(id="fit/x", title="X", source="corpus/x.md", locator="x", text="x text")


class Backend:
    """Streams two tokens and an answer; behaviours chosen per question."""

    model = "scripted"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.healthy = True

    async def stream(self, question, conversation_id, history):
        if question == "unknown-conversation":
            raise NotFoundError(f"unknown conversation id {conversation_id!r}")
        if question == "block":
            await self.release.wait()
        if question == "declined":
            yield {"type": "answer", "answer": Answer(answer="not covered", declined=True, model="m")}
            return
        yield {"type": "token", "text": "Ray Serve "}
        yield {"type": "token", "text": "fits [1]."}
        if question == "fail-midway":
            raise GenerationError("the engine died")
        if question == "replace":
            yield {"type": "replaced", "reason": "no valid citation"}
        model = "m (composed)" if question == "replace" else "m"
        text = "Composed [1]." if question == "replace" else "Ray Serve fits [1]."
        yield {
            "type": "answer",
            "answer": Answer(
                answer=text,
                recommendation="ray-serve",
                confidence=0.8,
                citations=[CITATION],
                timings={"retrieve_ms": 5, "total_ms": 9, "serve_overhead_ms": 1},
                model=model,
                conversation_id="c1",
            ),
            "retrieved": [{"ref": "fit/x", "text": "Ray Serve fits."}],
        }

    async def health(self) -> Health:
        if not self.healthy:
            raise ModelLoadError("the engine is starting")
        return Health(model="m", chunks=3, sources=1)

    async def replica_counts(self):
        return {"Ingress": {"RUNNING": 1}}


def client(**settings) -> tuple[TestClient, Backend]:
    app = create_api(ServeSettings(**settings))
    app.state.backend = Backend()
    return TestClient(app, raise_server_exceptions=False), app.state.backend


def events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_ask_returns_the_answer_contract():
    c, _ = client()
    reply = c.post("/v1/ask", json={"question": "which?"})
    assert reply.status_code == 200
    assert set(reply.json()) == set(Answer.model_fields)
    assert reply.json()["recommendation"] == "ray-serve"


def test_ask_returns_the_passages_only_when_asked():
    c, _ = client()
    reply = c.post("/v1/ask", json={"question": "which?", "include_retrieved": True})
    assert reply.json()["retrieved"] == [{"ref": "fit/x", "text": "Ray Serve fits."}]
    assert set(reply.json()) == {*Answer.model_fields, "retrieved"}
    declined = c.post("/v1/ask", json={"question": "declined", "include_retrieved": True})
    assert declined.json()["retrieved"] == []


def test_stream_is_tokens_then_the_answer():
    c, _ = client()
    reply = c.post("/v1/ask/stream", json={"question": "which?"})
    assert reply.headers["content-type"].startswith("text/event-stream")
    got = events(reply.text)
    assert [name for name, _ in got] == ["token", "token", "answer"]
    assert got[0][1] == {"text": "Ray Serve "}
    assert got[-1][1]["citations"][0]["id"] == "fit/x"


def test_failure_after_the_first_byte_is_an_error_event():
    c, _ = client()
    got = events(c.post("/v1/ask/stream", json={"question": "fail-midway"}).text)
    assert got[-1] == (
        "error",
        {"error": {"code": "generation_failed", "message": "the engine died", "type": "servewise_error"}},
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "body.question: Field required"),
        ({"question": 3}, "body.question"),
        ({"question": "q", "extra": 1}, "body.extra: Extra inputs are not permitted"),
        ({"question": "q", "history": [{"role": "wizard", "content": "x"}]}, "body.history.0.role"),
    ],
)
def test_invalid_bodies_get_422_naming_the_field(body, fragment):
    c, _ = client()
    reply = c.post("/v1/ask", json=body)
    assert reply.status_code == 422
    assert fragment in reply.json()["error"]["message"]
    assert "Traceback" not in reply.text


def test_not_json_gets_422():
    c, _ = client()
    reply = c.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == "invalid_request"


def test_oversized_bodies_get_413_declared_or_chunked():
    c, _ = client(max_body_bytes=1024)
    big = {"question": "x" * 2000}
    reply = c.post("/v1/ask", json=big)
    assert reply.status_code == 413
    assert "over 1024 bytes" in reply.json()["error"]["message"]
    chunked = c.post("/v1/ask", content=iter([b'{"question": "', b"x" * 1500, b'"}']))
    assert chunked.status_code == 413


def test_unknown_conversation_is_404():
    c, _ = client()
    reply = c.post("/v1/ask", json={"question": "unknown-conversation", "conversation_id": "nope"})
    assert reply.status_code == 404
    assert "unknown conversation id 'nope'" in reply.json()["error"]["message"]


def test_bearer_token_guards_everything_but_health():
    c, _ = client(auth_token="s3cret")
    assert c.get("/healthz").status_code == 200
    for method, path in [("post", "/v1/ask"), ("get", "/metrics"), ("post", "/v1/chat/completions")]:
        reply = c.request(method.upper(), path, json={"question": "q"} if method == "post" else None)
        assert reply.status_code == 401, path
        assert reply.headers["www-authenticate"] == "Bearer"
    ok = c.post("/v1/ask", json={"question": "q"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    wrong = c.post("/v1/ask", json={"question": "q"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_overload_gets_503_with_retry_after():
    app = create_api(ServeSettings(max_inflight=1))
    backend = app.state.backend = Backend()

    async def scenario():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = asyncio.create_task(http.post("/v1/ask", json={"question": "block"}))
            while app.state.inflight < 1:
                await asyncio.sleep(0.01)
            second = await http.post("/v1/ask", json={"question": "q"})
            backend.release.set()
            return await first, second

    first, second = asyncio.run(scenario())
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.headers["retry-after"] == "2"
    assert second.json()["error"]["code"] == "overloaded"


def test_health_is_503_until_ready():
    c, backend = client()
    backend.healthy = False
    reply = c.get("/healthz")
    assert reply.status_code == 503 and reply.headers["retry-after"]
    backend.healthy = True
    assert c.get("/healthz").json() == {"status": "ok", "model": "m", "chunks": 3, "sources": 1}


def test_metrics_show_stages_tokens_and_replicas():
    c, _ = client()
    c.post("/v1/ask", json={"question": "q"})
    text = c.get("/metrics").text
    assert 'servewise_stage_seconds_count{stage="retrieve"} 1.0' in text
    assert "servewise_tokens_generated_total 2.0" in text
    assert 'servewise_replicas{deployment="Ingress",state="RUNNING"} 1.0' in text
    assert 'servewise_requests_total{route="/v1/ask",status="200"} 1.0' in text


def test_openai_completion_with_the_servewise_field():
    c, _ = client()
    body = {
        "model": "anything",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
    }
    reply = c.post("/v1/chat/completions", json=body).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == "Ray Serve fits [1]."
    assert reply["servewise"]["citations"][0]["locator"] == "x"


def test_openai_stream_appends_the_grounded_replacement():
    c, _ = client()
    body = {"messages": [{"role": "user", "content": "replace"}], "stream": True}
    lines = [
        ln[6:]
        for ln in c.post("/v1/chat/completions", json=body).text.splitlines()
        if ln.startswith("data: ")
    ]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
    assert (
        text.startswith("Ray Serve fits [1].")
        and "replaced the draft" in text
        and text.endswith("Composed [1].")
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["servewise"]["model"] == "m (composed)"


def test_openai_rejects_a_chat_not_ending_with_the_user():
    c, _ = client()
    reply = c.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]})
    assert reply.status_code == 422
    assert "last message must have role 'user'" in reply.json()["error"]["message"]


def test_declined_answers_stream_their_text():
    c, _ = client()
    body = {"messages": [{"role": "user", "content": "declined"}], "stream": True}
    text = c.post("/v1/chat/completions", json=body).text
    assert "not covered" in text and '"declined": true' in text
