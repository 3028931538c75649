"""vLLM's ``AsyncLLMEngine`` in this process: the default generator backend.

The CPU build starts engine processes with ``spawn``, which re-imports the main module: a script
that starts a :class:`VLLMGenerator` needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import CPU_ATTENTION_VAR, GeneratorSettings, export_env
from assistant.errors import (
    BackendMissingError,
    ConfigError,
    GenerationError,
    InputError,
    ServeWiseError,
)
from assistant.generator import GenerationParams, Messages, check_messages, one_line
from assistant.models import PACKAGED_GENERATOR_NAME, display_name, resolve_generator_model
from assistant.priority import descendants, lower_priority


def vllm_env(settings: GeneratorSettings) -> dict[str, str]:
    """Environment for vLLM (in-process, or a ``vllm`` server process): the CPU build's variables,
    the CPU attention choice for :mod:`assistant.vllm_plugin`, and vLLM's log on stderr (its
    default is stdout, which belongs to the CLI's output).

    ``cpu_threads_bind: auto`` binds vLLM's OpenMP threads to every usable CPU, none reserved: on
    2 cores this gave 1.2x the single-stream and 1.4x the 8-stream token rate of binding one core
    and reserving the other (bench/answer.py, see the README).
    """
    bind = settings.cpu_threads_bind
    if bind == "auto":
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        bind = _cpu_list(cpus or list(range(os.cpu_count() or 1)))
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kvcache_gb),
        "VLLM_CPU_OMP_THREADS_BIND": bind,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        CPU_ATTENTION_VAR: settings.cpu_attention,
        "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    }


def _cpu_list(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    ranges: list[list[int]] = []
    for cpu in cpus:
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def set_vllm_env(settings: GeneratorSettings) -> None:
    """Set :func:`vllm_env` before vLLM is imported (it reads them then); explicit variables win.

    The ``VLLM_CPU_*`` ones are harmless for the CUDA build, which ignores them.
    """
    export_env(vllm_env(settings))


class VLLMGenerator:
    """vLLM's ``AsyncLLMEngine`` in this process: one engine, many concurrent streams."""

    def __init__(self, settings: GeneratorSettings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.name = display_name(settings.model) if settings.model else PACKAGED_GENERATOR_NAME
        self.model_path: str | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._vllm: Any = None
        self._start_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, settings: GeneratorSettings, data_dir: Path) -> VLLMGenerator:
        """Build from settings; an empty ``model`` means the packaged SmolLM2 (converted on start)."""
        return cls(settings, data_dir)

    @property
    def engine(self) -> Any:
        """The running ``AsyncLLMEngine`` (for metrics and tests)."""
        if self._engine is None:
            raise GenerationError(f"the vLLM generator ({self.name}) is not started")
        return self._engine

    async def start(self) -> None:
        """Resolve (convert) the model and start the engine, off the event loop (~20-40 s on CPU)."""
        if self._engine is not None:
            return
        async with self._start_lock:
            if self._engine is not None:
                return
            self.model_path = await asyncio.to_thread(resolve_generator_model, self.settings, self.data_dir)
            # Set inside the thread: a returned engine would stay referenced by the thread pool.
            await asyncio.to_thread(self._build_engine, self.model_path)
            self._tokenizer = self._engine.get_tokenizer()
            if not getattr(self._tokenizer, "chat_template", None):
                await self.close()
                raise GenerationError(f"the generator model {self.model_path} has no chat template")

    def _build_engine(self, model_path: str) -> None:
        set_vllm_env(self.settings)
        self._vllm = _import_vllm()
        s = self.settings
        try:
            args = self._vllm.AsyncEngineArgs(
                model=model_path,
                served_model_name=self.name,
                dtype=s.dtype,
                max_model_len=s.max_model_len,
                max_num_seqs=s.max_num_seqs,
                gpu_memory_utilization=s.gpu_memory_utilization,
                enforce_eager=s.enforce_eager,
                disable_log_stats=True,
                block_size=s.block_size,
                **({"distributed_executor_backend": s.executor} if s.executor else {}),
                **s.engine_args,
            )
        except TypeError as exc:
            raise ConfigError(f"generator.engine_args: {one_line(exc)}") from exc
        lower = s.engine_nice or s.engine_idle
        before = descendants(os.getpid()) if lower else set()
        try:
            self._engine = self._vllm.AsyncLLMEngine.from_engine_args(args)
        except Exception as exc:
            raise GenerationError(f"cannot start vLLM with {model_path}: {one_line(exc)}") from exc
        if lower:  # only now: the start itself runs at full priority
            lower_priority(descendants(os.getpid()) - before, s.engine_nice, s.engine_idle)

    async def check(self) -> None:
        """Raise when the engine is not started or has died."""
        try:
            await self.engine.check_health()
        except ServeWiseError:
            raise
        except Exception as exc:
            raise GenerationError(f"the vLLM engine ({self.name}) is not healthy: {one_line(exc)}") from exc

    async def close(self) -> None:
        """Shut the engine (and its background process) down."""
        engine, self._engine, self._tokenizer = self._engine, None, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()  # collect the engine now, not at interpreter exit when vLLM's __del__ fails

    def render(self, messages: Messages) -> str:
        """The prompt text: the model's chat template with the assistant turn opened."""
        check_messages(messages)
        tokenizer = self._tokenizer if self.engine is not None else None
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja errors: e.g. a template that rejects a role order
            raise InputError(f"the chat template of {self.name} rejects these messages: {exc}") from exc

    def sampling_params(self, params: GenerationParams) -> Any:
        """vLLM ``SamplingParams`` streaming deltas (``RequestOutputKind.DELTA``)."""
        delta = {"output_kind": self._vllm.delta_kind} if self._vllm.delta_kind is not None else {}
        return self._vllm.SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            seed=params.seed,
            **delta,
        )

    async def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[str]:
        """Yield text deltas; closing or cancelling the consumer aborts the request in vLLM."""
        check_messages(messages)
        await self.start()
        engine = self.engine
        text = self.render(messages)
        with self._translate_errors():
            prompt = await self._engine_input(text)
        request_id = f"servewise-{uuid.uuid4().hex}"
        outputs = engine.generate(
            prompt,
            self.sampling_params(params),
            request_id,
            tokenization_kwargs={"add_special_tokens": False},  # the chat template has them
        )
        finished, cumulative, sent = False, self._vllm.delta_kind is None, 0
        try:
            with self._translate_errors():
                async for output in outputs:
                    finished = output.finished
                    delta = output.outputs[0].text if output.outputs else ""
                    if cumulative:  # older vLLM: every output holds the whole text so far
                        delta, sent = delta[sent:], max(sent, len(delta))
                    if delta:
                        yield delta
        finally:
            await outputs.aclose()  # vLLM aborts the request when its generator is closed early
            if not finished:
                with contextlib.suppress(Exception):  # best effort: the engine may be gone
                    await engine.abort(request_id)

    async def _engine_input(self, text: str) -> Any:
        """The prompt tokenized by the engine's renderer (vLLM >= 0.32), else a plain text prompt.

        Rendering here, as vLLM's own chat endpoint does, avoids the deprecated raw-prompt path
        and checks the prompt against ``max_model_len`` before the request is queued.
        """
        renderer = getattr(self._engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "render_cmpl_async"):
            return {"prompt": text}
        (engine_input,) = await renderer.render_cmpl_async(
            [{"prompt": text}], renderer.default_chat_tok_params
        )
        return engine_input

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        exceptions = self._vllm.exceptions
        try:
            yield
        except exceptions.VLLMClientError as exc:  # e.g. a prompt longer than max_model_len
            raise GenerationError(f"{self.name} rejected the request: {one_line(exc)}") from exc
        except exceptions.EngineDeadError as exc:
            raise GenerationError(f"the vLLM engine ({self.name}) died; restart the service") from exc
        except (exceptions.VLLMError, RuntimeError, ValueError) as exc:
            raise GenerationError(f"generation with {self.name} failed: {one_line(exc)}") from exc


@dataclass
class _VLLMExceptions:
    VLLMError: type[BaseException]
    VLLMClientError: type[BaseException]
    EngineDeadError: type[BaseException]


@dataclass
class _VLLMModules:
    """The few vLLM names this module uses, imported together (after :func:`set_vllm_env`)."""

    AsyncEngineArgs: Any
    AsyncLLMEngine: Any
    SamplingParams: Any
    #: ``RequestOutputKind.DELTA``, or None where vLLM only streams cumulative text.
    delta_kind: Any
    exceptions: _VLLMExceptions


def _import_vllm() -> _VLLMModules:
    """Import vLLM, with an install hint when it is missing; newer names are optional."""
    try:
        from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams
    except ImportError as exc:
        raise BackendMissingError("The vllm generator", "vllm", "cpu") from exc
    output_kind = _optional("vllm.sampling_params", "RequestOutputKind")
    errors = _VLLMExceptions(
        _optional("vllm.exceptions", "VLLMError") or RuntimeError,
        _optional("vllm.exceptions", "VLLMClientError") or ValueError,
        _optional("vllm.v1.engine.exceptions", "EngineDeadError") or RuntimeError,
    )
    delta = getattr(output_kind, "DELTA", None)
    return _VLLMModules(AsyncEngineArgs, AsyncLLMEngine, SamplingParams, delta, errors)


def _optional(module: str, name: str) -> Any:
    """``module.name``, or None where this vLLM version lacks it."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
