"""The one place that maps errors to HTTP status codes and JSON bodies.

Bodies look like OpenAI's: ``{"error": {"code": ..., "message": ..., "type": ...}}``; the message
is the user-facing one-liner, never a traceback.
"""

from __future__ import annotations

from typing import Any

from assistant.errors import (
    BackendMissingError,
    ConfigError,
    EndpointError,
    GenerationError,
    IndexNotFoundError,
    InputError,
    InputTooLargeError,
    ModelLoadError,
    NotFoundError,
    OverloadedError,
    ServeWiseError,
    StoreError,
    UnauthorizedError,
)

#: Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[ServeWiseError], int]] = [
    (InputTooLargeError, 413),
    (NotFoundError, 404),
    (InputError, 422),
    (UnauthorizedError, 401),
    (OverloadedError, 503),
    (IndexNotFoundError, 503),
    (StoreError, 503),
    (ModelLoadError, 503),
    (BackendMissingError, 503),
    (GenerationError, 502),
    (EndpointError, 502),
    (ConfigError, 500),
]
RETRY_AFTER_S = 2


def status_of(error: ServeWiseError) -> int:
    """HTTP status for a ServeWise error (500 for anything unmapped)."""
    return next((status for cls, status in STATUS if isinstance(error, cls)), 500)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON error body."""
    return {"error": {"code": code, "message": message, "type": "servewise_error"}}


def error_headers(error: ServeWiseError) -> dict[str, str]:
    """``Retry-After`` where retrying later helps, ``WWW-Authenticate`` on 401."""
    if isinstance(error, OverloadedError | StoreError | ModelLoadError | IndexNotFoundError):
        return {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(error, UnauthorizedError):
        return {"WWW-Authenticate": "Bearer"}
    return {}
