"""Answer benchmark: the whole pipeline (retrieve, rerank, decide, generate with vLLM, verify).

Prints, for 1 and for 8 concurrent requests over in-scope questions of eval/datasets/dev.yaml:
time to first token (retrieval and reranking included), total latency p50/p95, generated tokens/s
(aggregate over the run, and the steady rate while all clients are in flight; clients are closed
loops, each sending its next question when its answer arrived). In the same run, a plain
transformers ``generate`` on the same model and the same prompts, one at a time, is the baseline:
the vLLM figures are also given as ratios to it. Tokens are counted by re-tokenizing the generated
text with the model's tokenizer.

    .venv/bin/python bench/answer.py [--data-dir D] [--requests 16] [--requests-per-client 6] [--json]

It asserts nothing; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, make_settings, parse_sets


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def questions(n: int) -> list[str]:
    """In-scope, single-turn dev questions, cycled to ``n``."""
    items = yaml.safe_load((ROOT / "eval/datasets/dev.yaml").read_text())["items"]
    pool = [
        i["question"]
        for i in items
        if i.get("scope", "in") == "in" and not i.get("history") and not i.get("corpus")
    ]
    return [pool[i % len(pool)] for i in range(n)]


async def one(assistant: Any, question: str, tokenizer: Any) -> dict[str, Any]:
    """Run one question; return its timings and the number of generated tokens."""
    parts, stamps, answer = [], [], None
    async for event in assistant.stream(question):
        if event["type"] == "token":
            parts.append(event["text"])
            stamps.append(time.perf_counter())
        elif event["type"] == "answer":
            answer = event["answer"]
    t = answer.timings
    tokens = len(tokenizer("".join(parts))["input_ids"])
    return {
        "ttft_ms": t.get("first_token_ms", t["total_ms"]),
        "total_ms": t["total_ms"],
        "generate_ms": t["generate_ms"],
        "tokens": tokens,
        "stamps": stamps,
    }


def tokens_before(results: list[dict[str, Any]], end: float) -> float:
    """Generated tokens up to ``end`` (each stream's tokens spread over its text deltas)."""
    return sum(r["tokens"] * sum(t <= end for t in r["stamps"]) / max(1, len(r["stamps"])) for r in results)


async def run_level(assistant: Any, qs: list[str], concurrency: int, tokenizer: Any) -> dict[str, Any]:
    """``concurrency`` closed-loop clients, each sending its next question as soon as its last answer
    arrived, until all questions are answered. Aggregate tokens/s over the wall time, and the steady
    rate: tokens/s until the first client runs out of questions (all ``concurrency`` in flight)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in qs:
        queue.put_nowait(q)
    results: list[dict[str, Any]] = []
    exits: list[float] = []

    async def client() -> None:
        while not queue.empty():
            results.append(await one(assistant, queue.get_nowait(), tokenizer))
        exits.append(time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    steady_end = min(exits)
    tokens = sum(r["tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "ttft_p50_ms": pct([r["ttft_ms"] for r in results], 0.5),
        "ttft_p95_ms": pct([r["ttft_ms"] for r in results], 0.95),
        "total_p50_ms": pct([r["total_ms"] for r in results], 0.5),
        "total_p95_ms": pct([r["total_ms"] for r in results], 0.95),
        "tokens_per_s": tokens / wall,
        "steady_tokens_per_s": tokens_before(results, steady_end) / (steady_end - started),
        "tokens": tokens,
        "wall_s": wall,
    }


def baseline(model_dir: str, prompts: list[list[dict[str, str]]], max_tokens: int) -> dict[str, float]:
    """transformers ``generate``, greedy, one prompt at a time, on the same model and prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tokens, started, latencies = 0, time.perf_counter(), []
    for messages in prompts:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        latencies.append((time.perf_counter() - t0) * 1000)
        tokens += out.shape[1] - ids.shape[1]
    wall = time.perf_counter() - started
    return {
        "requests": len(prompts),
        "tokens_per_s": tokens / wall,
        "total_p50_ms": pct(latencies, 0.5),
        "total_p95_ms": pct(latencies, 0.95),
        "tokens": tokens,
    }


async def prompts_for(assistant: Any, qs: list[str]) -> list[list[dict[str, str]]]:
    """The exact messages the pipeline sends to the generator for each question."""
    from assistant.prompt import build_messages

    out = []
    for q in qs:
        prep = await assistant.prepare(q, None, [])
        shown = prep.sources[: assistant.settings.answer.prompt_sources]
        out.append(
            build_messages(
                prep.question,
                shown,
                prep.decision,
                prep.history,
                assistant.settings.answer.prompt_source_chars,
            )
        )
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from assistant.ingest.indexer import Ingestor
    from assistant.models import resolve_generator_model
    from assistant.pipeline import Assistant

    answer = {"prompt_sources": args.prompt_sources, "prompt_source_chars": args.source_chars}
    extra = parse_sets(args.set)
    extra["answer"] = {**extra.get("answer", {}), **answer}
    settings = make_settings(Path(args.data_dir or tempfile.mkdtemp(prefix="sw-bench-answer-")), **extra)
    Ingestor.from_config(settings)([ROOT / "corpus"])
    assistant = Assistant.from_config(settings)
    t0 = time.perf_counter()
    await assistant.generator.start()
    start_s = time.perf_counter() - t0
    model_dir = resolve_generator_model(settings.generator, Path(settings.data_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Distinct questions per level: repeated prompts would hit vLLM's prefix cache.
    n8 = 8 * args.requests_per_client
    qs = questions(args.requests + n8 + 2)
    await run_level(assistant, qs[-2:], 2, tokenizer)  # warm up
    one_q, eight_q = qs[: args.requests], qs[args.requests : args.requests + n8]
    levels = [
        await run_level(assistant, one_q, 1, tokenizer),
        await run_level(assistant, eight_q, 8, tokenizer),
    ]
    prompts = await prompts_for(assistant, qs[: args.baseline_requests])
    await assistant.generator.close()
    base = baseline(model_dir, prompts, settings.generator.max_tokens)
    return {
        "engine_start_s": start_s,
        "levels": levels,
        "baseline_transformers": base,
        "ratio_8_vs_1": levels[1]["tokens_per_s"] / levels[0]["tokens_per_s"],
        "ratio_8_vs_1_steady": levels[1]["steady_tokens_per_s"] / levels[0]["tokens_per_s"],
        "ratio_vllm1_vs_baseline": levels[0]["tokens_per_s"] / base["tokens_per_s"],
        "ratio_vllm8_vs_baseline": levels[1]["tokens_per_s"] / base["tokens_per_s"],
    }


def report(r: dict[str, Any]) -> None:
    """Plain-text table."""
    print(f"engine start: {r['engine_start_s']:.1f} s")
    print(
        f"{'clients':>7} {'reqs':>5} {'TTFT p50':>9} {'TTFT p95':>9} {'total p50':>10} "
        f"{'total p95':>10} {'tok/s':>8} {'steady':>8}"
    )
    for lv in r["levels"]:
        ttft = f"{lv['ttft_p50_ms']:>7.0f}ms {lv['ttft_p95_ms']:>7.0f}ms"
        total = f"{lv['total_p50_ms']:>8.0f}ms {lv['total_p95_ms']:>8.0f}ms"
        print(
            f"{lv['concurrency']:>7} {lv['requests']:>5} {ttft} {total} {lv['tokens_per_s']:>8.1f} "
            f"{lv['steady_tokens_per_s']:>8.1f}"
        )
    b = r["baseline_transformers"]
    print(
        f"transformers generate (sequential, {b['requests']} reqs): {b['tokens_per_s']:.1f} tok/s, "
        f"p50 {b['total_p50_ms']:.0f} ms"
    )
    print(
        f"8 clients / 1 client token rate: {r['ratio_8_vs_1']:.2f}x over the whole run, "
        f"{r['ratio_8_vs_1_steady']:.2f}x while all 8 are in flight"
    )
    print(
        f"vLLM 1 client / transformers: {r['ratio_vllm1_vs_baseline']:.2f}x; "
        f"vLLM 8 clients / transformers: {r['ratio_vllm8_vs_baseline']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=6, help="at 8 clients")
    parser.add_argument("--baseline-requests", type=int, default=6)
    parser.add_argument("--prompt-sources", type=int, default=2)
    parser.add_argument("--source-chars", type=int, default=350)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="e.g. generator.enforce_eager=false")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2)) if args.json else report(result)


if __name__ == "__main__":
    main()
