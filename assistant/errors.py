"""The one error hierarchy.

Every exception that leaves ``assistant`` is a :class:`ServeWiseError`. Third-party errors are
translated where they enter (``raise StoreError(...) from exc``). The HTTP layer maps these
classes to status codes in a single place (``serve/errors.py``); the CLI prints ``str(error)``.
"""

from __future__ import annotations


class ServeWiseError(Exception):
    """Base class: the message is meant for the user, one line, naming the problem."""

    #: Short machine-readable code used by the API layer.
    code = "servewise_error"


class ConfigError(ServeWiseError):
    """Settings are invalid or a config file cannot be read."""

    code = "invalid_config"


class BackendMissingError(ServeWiseError):
    """An optional backend's package is not installed; the message carries an install hint."""

    code = "backend_missing"

    def __init__(self, what: str, package: str, extra: str | None = None) -> None:
        hint = f"pip install 'servewise[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what} needs the '{package}' package, which is not installed: {hint}")
        self.package = package


class ModelLoadError(ServeWiseError):
    """A model directory is missing or cannot be loaded."""

    code = "model_unavailable"


class GenerationError(ServeWiseError):
    """The text generator failed or cannot be reached (engine died, server down, HTTP error)."""

    code = "generation_failed"


class StoreError(ServeWiseError):
    """The vector store or the lexical index failed or cannot be reached."""

    code = "store_unavailable"


class IndexNotFoundError(ServeWiseError):
    """Nothing has been ingested into the data dir yet."""

    code = "index_missing"


class InputError(ServeWiseError):
    """A request or query is invalid (empty, too long, bad filter)."""

    code = "invalid_input"


class SkipSource(ServeWiseError):
    """One source file cannot be ingested; ingestion goes on with the rest.

    Raised by loaders; the message is the reason printed next to the file name.
    """

    code = "skipped_source"


class InputTooLargeError(InputError):
    """Input over a configured size limit (question length, request body)."""

    code = "input_too_large"


class NotFoundError(InputError):
    """A named thing (a conversation id) does not exist."""

    code = "not_found"


class UnauthorizedError(ServeWiseError):
    """A missing or wrong bearer token."""

    code = "unauthorized"


class OverloadedError(ServeWiseError):
    """Too many requests are queued; the caller should retry later."""

    code = "overloaded"


class EndpointError(ServeWiseError):
    """A ServeWise server (``servewise eval --endpoint``) cannot be reached or is not ready."""

    code = "endpoint_unavailable"
