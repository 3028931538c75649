"""The Serve benchmark's baselines in this process (bench/serve.py), one question at a time:

* **Naive** (the target's baseline): the whole pipeline as a team would first write it without a
  serving stack: ``Assistant`` with the same retrieval, reranking, prompt and verifier, and the same
  model weights loaded with plain transformers and called with ``generate`` per request
  (:class:`TransformersGenerator`), the generator's sampling settings and ``max_tokens``.
* **vLLM, sequential**: the same pipeline with the vLLM engine, still one request at a time. It is
  the engine's own single-stream speed; the Serve app over it mostly measures vLLM's batching.

Both also give the exact chat messages the pipeline would send, for the bare vLLM server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from answer import one, prompts_for
from common import log
from procs import NAME

from assistant.generator import GenerationParams, Messages

#: The converted model's own dtype, which is also transformers' "auto". On this AVX512-BF16 CPU it is
#: the faster one for plain torch: 15.7-16.9 tok/s against 13.2-13.4 for float32 (128 tokens, batch 1).
DTYPE = "bfloat16"


class TransformersGenerator:
    """:class:`assistant.generator.Generator` over transformers ``generate`` (one request at a
    time, no batching, no paged KV cache), streaming through ``TextIteratorStreamer``."""

    def __init__(self, model_dir: str, dtype: str = DTYPE) -> None:
        self.model_dir = model_dir
        self.dtype = dtype
        self.name = f"transformers:{dtype}"
        self.model: Any = None
        self.tokenizer: Any = None

    async def start(self) -> None:
        """Load the tokenizer and the weights."""
        if self.model is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        dtype = getattr(torch, self.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).eval()

    async def check(self) -> None:
        """Nothing to check: the model is in this process."""

    async def close(self) -> None:
        """Drop the model."""
        self.model = None

    async def stream(self, messages: Messages, params: GenerationParams) -> AsyncIterator[str]:
        """``generate`` in a thread; its text deltas as they come."""
        from transformers import TextIteratorStreamer

        await self.start()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        thread = threading.Thread(target=self._generate, args=(messages, params, streamer), daemon=True)
        thread.start()
        while (piece := await asyncio.to_thread(next, streamer, None)) is not None:
            if piece:
                yield piece
        await asyncio.to_thread(thread.join)

    def _generate(self, messages: Messages, params: GenerationParams, streamer: Any) -> None:
        import torch

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        sample = params.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": sample}
        if sample:
            options |= {"temperature": params.temperature, "top_p": params.top_p}
        if params.stop:
            options |= {"stop_strings": params.stop, "tokenizer": self.tokenizer}
        with torch.inference_mode():
            self.model.generate(ids, attention_mask=torch.ones_like(ids), streamer=streamer, **options)


async def sequential(assistant: Any, plan: dict[str, Any], tokenizer: Any, runner: tuple) -> dict[str, Any]:
    """One warm-up question, then ``plan["naive"]`` one after another: the level's figures."""
    closed_loop, summarize = runner
    started = time.perf_counter()
    await assistant.generator.start()
    start_s = time.perf_counter() - started
    await one(assistant, plan["warm"], tokenizer)
    run = await closed_loop(lambda q: naive_one(assistant, q, tokenizer), plan["naive"], 1)
    return summarize(run, 1) | {"engine_start_s": start_s, "generator": assistant.generator.name}


async def naive_one(assistant: Any, question: str, tokenizer: Any) -> dict[str, Any]:
    """One question through the in-process pipeline, in the shape of ``serve_http.record``."""
    t0 = time.perf_counter()
    r = await one(assistant, question, tokenizer)
    return r | {"total_ms": (time.perf_counter() - t0) * 1000, "error": None, "problems": []}


async def baselines_in_process(
    settings: Any,
    model_dir: str,
    plan: dict[str, Any],
    tokenizer: Any,
    runner: tuple[Callable[..., Awaitable[dict[str, Any]]], Callable[..., dict[str, Any]]],
) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
    """``{"naive": ..., "vllm_sequential": ...}`` (each when asked for) and the chat messages for
    ``plan["prompt_qs"]``. ``runner``: bench/serve.py's ``closed_loop`` and ``summarize``."""
    from assistant.pipeline import Assistant

    out: dict[str, Any] = {}
    assistant = Assistant.from_config(settings)
    try:
        prompts = await prompts_for(assistant, plan["prompt_qs"]) if plan["prompt_qs"] else []
        if plan["naive"]:
            log(NAME, f"vLLM in-process: {len(plan['naive'])} questions, one at a time")
            out["vllm_sequential"] = await sequential(assistant, plan, tokenizer, runner)
    finally:
        await assistant.generator.close()
    if plan["naive"]:
        assistant.generator = TransformersGenerator(model_dir)
        log(NAME, f"naive (transformers generate): {len(plan['naive'])} questions, one at a time")
        out["naive"] = await sequential(assistant, plan, tokenizer, runner)
        await assistant.generator.close()
    return out, prompts
