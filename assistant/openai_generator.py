"""A generator backed by any OpenAI-compatible server, through the ``openai`` client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from assistant.config import GeneratorSettings
from assistant.errors import (
    BackendMissingError,
    ConfigError,
    GenerationError,
)
from assistant.generator import GenerationParams, Messages, check_messages, one_line
from assistant.models import display_name, resolve_generator_model


class OpenAICompatibleGenerator:
    """Chat completions from an OpenAI-compatible server (``vllm serve``, a hosted API)."""

    def __init__(self, base_url: str, model: str = "", api_key: str | None = None, timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.name = display_name(model) if model else ""
        self._client: Any = None
        self._openai: Any = None

    @classmethod
    def from_config(
        cls, settings: GeneratorSettings, data_dir: Path | None = None
    ) -> OpenAICompatibleGenerator:
        """Build from settings; needs ``base_url``. An empty ``model``: the server's first model."""
        if not settings.base_url:
            raise ConfigError("generator.base_url is required when generator.kind is 'openai'")
        model = resolve_generator_model(settings, Path(data_dir or "."))
        return cls(settings.base_url, model, settings.api_key, settings.timeout_s)

    async def start(self) -> None:
        """Create the client; ask the server for its model when none is configured."""
        if self._client is None:
            self._openai = _import_openai()
            self._client = self._openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key or "EMPTY", timeout=self.timeout_s, max_retries=0
            )
        if not self.model:
            served = await self._served_models()
            if not served:
                raise GenerationError(f"the generator at {self.base_url} serves no model")
            self.model, self.name = served[0], display_name(served[0])

    async def _served_models(self) -> list[str]:
        with self._translate_errors():
            page = await self._client.models.list()
            return [m.id for m in page.data]

    async def check(self) -> None:
        """List the server's models; raise when it is unreachable or lacks the configured model."""
        await self.start()
        served = await self._served_models()
        if self.model not in served:
            raise GenerationError(
                f"the generator at {self.base_url} does not serve {self.model!r} (it serves: "
                f"{', '.join(served) or 'nothing'})"
            )

    async def close(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[str]:
        """Yield text deltas of a streamed chat completion; closing early closes the connection."""
        check_messages(messages)
        await self.start()
        with self._translate_errors():
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, stream=True, **_request_options(params)
            )
        try:
            with self._translate_errors():
                async for chunk in response:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        yield delta
        finally:
            await response.close()  # the server aborts the request when the client goes away

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        openai, url = self._openai, self.base_url
        try:
            yield
        except openai.APITimeoutError as exc:
            raise GenerationError(
                f"the generator at {url} did not answer within {self.timeout_s:g} s"
            ) from exc
        except openai.APIConnectionError as exc:
            reason = _connection_reason(exc)
            raise GenerationError(f"cannot connect to the generator at {url}: {reason}") from exc
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            detail = one_line(body.get("message") or exc.message)
            raise GenerationError(
                f"the generator at {url} answered HTTP {exc.status_code}: {detail}"
            ) from exc
        except openai.OpenAIError as exc:
            raise GenerationError(f"the generator at {url} failed: {one_line(exc)}") from exc


def _request_options(params: GenerationParams) -> dict[str, Any]:
    """Chat-completion options; unset ones are left out rather than sent as null."""
    options: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.stop:
        options["stop"] = list(params.stop)
    if params.seed is not None:
        options["seed"] = params.seed
    return options


def _connection_reason(exc: BaseException) -> str:
    """The most specific cause of a connection failure: "connection refused", a DNS error..."""
    reason, cause = one_line(exc), exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            reason = one_line(cause.strerror)
        elif str(cause):
            reason = one_line(cause)
        cause = cause.__cause__ or cause.__context__
    return reason


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise BackendMissingError("The openai generator", "openai") from exc
    return openai
