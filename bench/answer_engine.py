"""Answer-engine benchmark: the packaged SmolLM2 on vLLM in-process.

1. **Conversion**: GGUF -> bfloat16 safetensors directory, in a fresh data dir (skipped with
   ``--data-dir`` pointing at one that already holds the converted model: then it times the
   cache hit).
2. **Engine start**: ``VLLMGenerator.start()`` (vLLM import, engine-core and worker processes,
   weights, KV cache).
3. **One stream** and **N concurrent streams** (default 8): time to first token (TTFT) and
   tokens/s. Tokens are counted by re-tokenizing the generated text; "decode tok/s" is tokens
   after the first divided by the time after the first delta; "aggregate tok/s" is all tokens of
   all streams over the wall time of the batch.
4. **Peak RSS** of this process and of the largest engine child process (after shutdown).

Run from the repository root::

    .venv/bin/python bench/answer_engine.py            # plain text
    .venv/bin/python bench/answer_engine.py --json     # one JSON object

It prints figures and asserts nothing; timings depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from assistant.config import load_settings
from assistant.generator import GenerationParams
from assistant.models import ensure_packaged_generator
from assistant.vllm_generator import VLLMGenerator

PROMPTS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Explain how a canary rollout works, step by step.",
    "Describe the water cycle in detail.",
    "List ten things to check before deploying a model to production, and explain each.",
    "Write a poem about the sea, then explain its meaning.",
    "Explain what a Kubernetes operator is to a new engineer.",
    "Describe a day in the life of a lighthouse keeper.",
    "Give detailed advice on learning to play the piano as an adult.",
]


async def one_stream(generator: VLLMGenerator, prompt: str, params: GenerationParams) -> dict[str, float]:
    """Stream one answer; TTFT, tokens and decode rate."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    async for delta in generator.stream([{"role": "user", "content": prompt}], params):
        first = first or time.perf_counter()
        parts.append(delta)
    end = time.perf_counter()
    tokens = len(generator._tokenizer.encode("".join(parts), add_special_tokens=False))
    first = first or end
    decode_s = end - first
    return {
        "ttft_s": first - started,
        "tokens": tokens,
        "wall_s": end - started,
        "decode_tok_s": (tokens - 1) / decode_s if decode_s > 0 and tokens > 1 else 0.0,
    }


async def batch(generator: VLLMGenerator, n: int, params: GenerationParams) -> dict[str, Any]:
    """``n`` concurrent streams; per-stream figures summarised, aggregate throughput."""
    started = time.perf_counter()
    runs = await asyncio.gather(*(one_stream(generator, PROMPTS[i % len(PROMPTS)], params) for i in range(n)))
    wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in runs)
    return {
        "streams": n,
        "wall_s": wall,
        "tokens": tokens,
        "aggregate_tok_s": tokens / wall,
        "ttft_median_s": statistics.median(r["ttft_s"] for r in runs),
        "ttft_max_s": max(r["ttft_s"] for r in runs),
        "per_stream_decode_tok_s": statistics.median(r["decode_tok_s"] for r in runs),
    }


async def measure(
    data_dir: Path, streams: int, max_tokens: int, sets: dict[str, Any] | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    ensure_packaged_generator(data_dir)
    conversion_s = time.perf_counter() - started
    settings = load_settings(overrides={"data_dir": str(data_dir), **(sets or {})}, environ={})
    generator = VLLMGenerator.from_config(settings.generator, settings.data_dir)
    started = time.perf_counter()
    await generator.start()
    start_s = time.perf_counter() - started
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    await one_stream(generator, "Say hello.", GenerationParams(max_tokens=8))  # warm-up
    single = await batch(generator, 1, params)
    many = await batch(generator, streams, params)
    await generator.close()
    return {
        "model": generator.name,
        "settings": {k: getattr(settings.generator, k) for k in ("dtype", "max_model_len", "max_num_seqs")}
        | {"cpu_kvcache_gb": settings.generator.cpu_kvcache_gb, "max_tokens": max_tokens},
        "conversion_s": conversion_s,
        "engine_start_s": start_s,
        "single": single,
        "concurrent": many,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def report(result: dict[str, Any]) -> str:
    single, many = result["single"], result["concurrent"]
    lines = [
        f"model                 {result['model']}  {result['settings']}",
        f"conversion            {result['conversion_s']:.1f} s",
        f"engine start          {result['engine_start_s']:.1f} s",
        f"1 stream              TTFT {single['ttft_median_s'] * 1000:.0f} ms, "
        f"{single['tokens']} tokens, {single['per_stream_decode_tok_s']:.1f} tok/s decode",
        f"{many['streams']} concurrent streams  TTFT median {many['ttft_median_s'] * 1000:.0f} ms, "
        f"max {many['ttft_max_s'] * 1000:.0f} ms; {many['tokens']} tokens in {many['wall_s']:.1f} s = "
        f"{many['aggregate_tok_s']:.1f} tok/s aggregate, "
        f"{many['per_stream_decode_tok_s']:.1f} tok/s per stream",
        f"peak RSS              {result['peak_rss_mib']:.0f} MiB (this process), "
        f"{result['peak_child_rss_mib']:.0f} MiB (largest engine process)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="reuse a data dir (default: a fresh temporary one)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="e.g. generator.enforce_eager=false")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="servewise-bench-") as tmp:
        sets = common.parse_sets(args.set)
        result = asyncio.run(measure(args.data_dir or Path(tmp), args.streams, args.max_tokens, sets))
    print(json.dumps(result, indent=1) if args.json else report(result))


if __name__ == "__main__":
    main()
