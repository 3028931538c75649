"""Text generators behind one small async interface.

Three backends:

* :class:`VLLMGenerator`: vLLM's ``AsyncLLMEngine`` in this process (continuous batching, so many
  concurrent streams share the model). The CPU build (``servewise[cpu]``) runs the packaged
  SmolLM2-135M-Instruct; the CUDA build (``servewise[gpu]``) runs any local model directory.
* :class:`OpenAICompatibleGenerator`: any OpenAI-compatible server (vLLM's own, a hosted API),
  through the ``openai`` client.
* :class:`ExtractiveGenerator`: no model at all; the answer is the verifier's composed text.

Both stream text deltas; :func:`complete` joins them. Heavy packages are imported when a backend
starts, never when this module is imported.

vLLM's CPU build starts its engine processes with ``spawn``, which re-imports the main module:
a script that starts a :class:`VLLMGenerator` needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from assistant.config import GeneratorSettings, Settings
from assistant.errors import (
    ConfigError,
    InputError,
)

Messages = list[dict[str, str]]


@dataclass
class GenerationParams:
    """Sampling parameters of one request."""

    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @classmethod
    def from_settings(cls, settings: GeneratorSettings, **overrides: Any) -> GenerationParams:
        """Defaults from the generator settings (``max_tokens``, ``temperature``), then overrides."""
        values: dict[str, Any] = {"max_tokens": settings.max_tokens, "temperature": settings.temperature}
        values.update(overrides)
        return cls(**values)


class Generator(Protocol):
    """What the answer pipeline needs from a text generator."""

    #: The model name shown to users.
    name: str

    def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[str]:
        """Yield the answer to a chat (``[{"role": ..., "content": ...}]``) as text deltas.

        Implemented as ``async def ... yield``. Closing the iterator early (or cancelling the task
        consuming it) stops the request in the backend.
        """
        ...

    async def start(self) -> None:
        """Load the model or connect; idempotent and safe to call concurrently."""
        ...

    async def check(self) -> None:
        """Raise :class:`GenerationError` when the generator is not usable."""
        ...

    async def close(self) -> None:
        """Release the engine or the connection; :meth:`start` may be called again afterwards."""
        ...


async def complete(generator: Generator, messages: Messages, params: GenerationParams | None = None) -> str:
    """The whole answer: the stream's deltas joined."""
    parts = [delta async for delta in generator.stream(messages, params or GenerationParams())]
    return "".join(parts)


def build_generator(settings: Settings) -> Generator:
    """The generator that ``settings.generator.kind`` selects (not started yet)."""
    kind = settings.generator.kind
    if kind == "vllm":
        from assistant.vllm_generator import VLLMGenerator

        return VLLMGenerator.from_config(settings.generator, settings.data_dir)
    if kind == "openai":
        from assistant.openai_generator import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator.from_config(settings.generator, settings.data_dir)
    if kind == "extractive":
        return ExtractiveGenerator()
    raise ConfigError(f"generator.kind: unknown generator {kind!r}")


class ExtractiveGenerator:
    """No model: writes nothing, so every answer is the verifier's composed, cited text.

    The baseline the evaluation harness compares the model against (``generator.kind: extractive``).
    """

    name = "extractive"

    async def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[str]:
        check_messages(messages)
        for _ in ():
            yield ""

    async def start(self) -> None:
        return None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


def check_messages(messages: Messages) -> None:
    if not messages:
        raise InputError("a chat needs at least one message")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError("each chat message needs a 'role' and a 'content'")


def one_line(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
