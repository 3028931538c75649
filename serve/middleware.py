"""Pure ASGI middleware: the request body size limit (413 before any parsing, for both
``Content-Length`` bodies and chunked uploads) and request counting by route and status."""

from __future__ import annotations

import json
from typing import Any

from serve.errors import error_body

Scope = dict[str, Any]


class BodyLimit:
    """Reject bodies over ``app.state.settings.max_body_bytes`` with 413; buffer smaller ones and
    replay them (read per request, so the ingress can set the settings after the app is built)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        limit = scope["app"].state.settings.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await _reject(send, limit, int(declared))
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                await _reject(send, limit, size)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await self.app(scope, _replay(messages, receive), send)


async def _reject(send: Any, limit: int, size: int) -> None:
    message = f"the request body is over {limit} bytes ({size} received or declared)"
    body = json.dumps(error_body("input_too_large", message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    queue = list(messages)

    async def replayed() -> dict[str, Any]:
        return queue.pop(0) if queue else await receive()

    return replayed


class CountRequests:
    """``servewise_requests_total{route, status}`` (the route template, not the raw path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            scope["app"].state.metrics.requests.labels(route, str(status["code"])).inc()
