"""The HTTP API (FastAPI): ``/v1/ask``, ``/v1/ask/stream`` (server-sent events), an OpenAI-compatible
``/v1/chat/completions``, ``/healthz`` and ``/metrics``. OpenAPI docs at ``/docs``.

The routes know nothing about Ray: they call a :class:`Backend` found on ``app.state.backend``
(the Serve ingress sets one that calls the other deployments; tests may set their own).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from assistant.errors import ModelLoadError, OverloadedError, ServeWiseError, UnauthorizedError
from assistant.feedback import FeedbackStore
from assistant.serve_settings import ServeSettings
from assistant.types import Answer, Turn
from serve.errors import error_body, error_headers, status_of
from serve.feedback_api import router as feedback_router
from serve.metrics import Metrics
from serve.middleware import BodyLimit, CountRequests
from serve.openai_compat import ChatRequest, completion, completion_chunks, split_messages
from serve.schemas import AskRequest, Health

log = logging.getLogger("servewise.api")
Event = dict[str, Any]


class Backend(Protocol):
    """What the routes need from the rest of the graph."""

    model: str

    def stream(
        self, question: str, conversation_id: str | None, history: list[Turn] | None
    ) -> AsyncIterator[Event]:
        """The pipeline's events: ``token``, ``replaced``, then ``answer``."""
        ...

    async def health(self) -> Health:
        """Raise a ServeWiseError unless the index is loaded and the engine answers."""
        ...

    async def replica_counts(self) -> dict[str, dict[str, int]]:
        """``{deployment: {state: n}}``."""
        ...


class Starting:
    """The backend until the ingress has built the real one."""

    model = ""

    def stream(self, question: str, conversation_id: str | None, history: list[Turn] | None):
        raise ModelLoadError("ServeWise is starting; retry in a few seconds")

    async def health(self) -> Health:
        raise ModelLoadError("ServeWise is starting")

    async def replica_counts(self) -> dict[str, dict[str, int]]:
        return {}


def create_api(settings: ServeSettings | None = None, feedback: FeedbackStore | None = None) -> FastAPI:
    """A FastAPI app; set ``app.state.backend`` (and the real ``app.state.settings``) before use.
    ``feedback`` keeps ``POST /v1/feedback`` ratings (without one that route answers 503)."""
    app = FastAPI(
        title="ServeWise",
        version="1",
        description="Decide between KServe and Ray Serve, grounded in criteria and your manifests.",
    )
    app.state.settings = settings or ServeSettings()
    app.state.backend = Starting()
    app.state.metrics = Metrics()
    app.state.inflight = 0
    app.state.feedback = feedback
    app.add_middleware(BodyLimit)
    app.add_middleware(CountRequests)  # added last: outermost, so it sees 413s too
    _add_error_handlers(app)
    _add_routes(app)
    return app


# -- errors ---------------------------------------------------------------------------------------
def error_response(error: ServeWiseError) -> JSONResponse:
    """The JSON response for a ServeWise error."""
    return JSONResponse(
        error_body(error.code, str(error)), status_code=status_of(error), headers=error_headers(error)
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeWiseError)
    async def servewise_error(request: Request, exc: ServeWiseError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", describe_validation(exc)), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        message = f"internal error ({type(exc).__name__}); the server log has the details"
        return JSONResponse(error_body("internal_error", message), status_code=500)


def describe_validation(exc: RequestValidationError) -> str:
    """``body.question: Field required; ...``: one line naming each problem."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


# -- auth and admission ---------------------------------------------------------------------------
async def require_token(request: Request) -> None:
    """Check ``Authorization: Bearer <token>`` when a token is configured."""
    token = request.app.state.settings.auth_token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or given.strip() != token.get_secret_value():
        raise UnauthorizedError("missing or wrong bearer token (send 'Authorization: Bearer <token>')")


class Admission:
    """Counts answers in progress; refuses beyond ``max_inflight`` with 503 + Retry-After."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __enter__(self) -> Admission:
        state = self.app.state
        if state.inflight >= state.settings.max_inflight:
            raise OverloadedError(f"{state.inflight} answers in progress; retry in a few seconds")
        state.inflight += 1
        state.metrics.inflight.set(state.inflight)
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.state.inflight -= 1
        self.app.state.metrics.inflight.set(self.app.state.inflight)


async def admitted_events(app: FastAPI, question: str, cid: str | None, history: list[Turn] | None):
    """The backend's events under admission control, recording metrics as they pass."""
    metrics, deltas = app.state.metrics, 0
    with Admission(app):
        async for event in app.state.backend.stream(question, cid, history):
            deltas += event["type"] == "token"
            if event["type"] == "answer":  # a backend that knows the true token count says so
                metrics.observe_timings(event["answer"].timings)
                metrics.tokens.inc(event.get("tokens", deltas))
            yield event


async def started(events: AsyncIterator[Event]) -> tuple[Event, AsyncIterator[Event]]:
    """Pull the first event, so errors before any output become a proper HTTP status."""
    first = await anext(events)
    return first, events


# -- routes ---------------------------------------------------------------------------------------
def _add_routes(app: FastAPI) -> None:
    guarded = [Depends(require_token)]

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(request: Request) -> Response:
        """200 when the index is loaded and the engine answers; 503 (with the reason) otherwise."""
        try:
            health = await request.app.state.backend.health()
        except ServeWiseError as exc:
            return error_response(exc)
        return JSONResponse(health.model_dump())

    @app.get("/metrics", dependencies=guarded, tags=["ops"])
    async def metrics(request: Request) -> Response:
        """Prometheus text format."""
        state = request.app.state
        state.metrics.set_replicas(await state.backend.replica_counts())
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/ask", response_model=Answer, dependencies=guarded, tags=["answers"])
    async def ask(body: AskRequest, request: Request) -> Response:
        """The Answer JSON for one question (plus ``retrieved`` when ``include_retrieved`` is set)."""
        final: Event = {}
        async for event in admitted_events(request.app, body.question, body.conversation_id, body.history):
            final = event if event["type"] == "answer" else final
        payload = final["answer"].model_dump(mode="json")
        if body.include_retrieved:
            payload["retrieved"] = final.get("retrieved", [])
        return JSONResponse(payload)

    @app.post("/v1/ask/stream", dependencies=guarded, tags=["answers"])
    async def ask_stream(body: AskRequest, request: Request) -> StreamingResponse:
        """Server-sent events: ``token`` (``{"text"}``), maybe ``replaced`` (``{"reason"}``), then
        ``answer`` (the Answer JSON); a failure mid-stream is an ``error`` event."""
        events = admitted_events(request.app, body.question, body.conversation_id, body.history)
        first, rest = await started(events)
        return StreamingResponse(sse(first, rest), media_type="text/event-stream", headers=NO_BUFFER)

    @app.get("/v1/models", dependencies=guarded, tags=["openai"])
    async def models(request: Request) -> dict[str, Any]:
        """OpenAI-style model list: one model, ``servewise``."""
        return {"object": "list", "data": [{"id": "servewise", "object": "model", "owned_by": "servewise"}]}

    @app.post("/v1/chat/completions", dependencies=guarded, tags=["openai"])
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        """OpenAI-compatible chat; the answer's citations etc. are in the extra ``servewise`` field."""
        question, history = split_messages(body.messages)
        events = admitted_events(request.app, question, None, history)
        if not body.stream:
            answer = None
            async for event in events:
                answer = event["answer"] if event["type"] == "answer" else answer
            return JSONResponse(completion(answer))
        first, rest = await started(events)
        chunks = completion_chunks(first, rest)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=NO_BUFFER)

    app.include_router(feedback_router, dependencies=guarded)


NO_BUFFER = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(name: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[str]:
    """Pipeline events as server-sent events; errors after the first byte become an ``error`` event."""
    try:
        yield render_event(first)
        async for event in rest:
            yield render_event(event)
    except ServeWiseError as exc:
        yield sse_event("error", error_body(exc.code, str(exc)))
    except Exception as exc:  # the status line is already sent: report in-band, log the details
        log.exception("stream failed")
        yield sse_event("error", error_body("internal_error", f"internal error ({type(exc).__name__})"))


def render_event(event: Event) -> str:
    """``token`` -> ``{"text"}``, ``replaced`` -> ``{"reason"}``, ``answer`` -> the Answer JSON."""
    if event["type"] == "answer":
        return sse_event("answer", event["answer"].model_dump(mode="json"))
    return sse_event(event["type"], {k: v for k, v in event.items() if k != "type"})
