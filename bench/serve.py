"""Serve benchmark: the Ray Serve app against a naive in-process pipeline and a bare vLLM server.

One run, on a fresh temporary data dir with the bundled corpus ingested (``servewise ingest corpus/``):

1. **In-process baselines** (:mod:`naive`), questions one after another, the whole pipeline each
   time: the **naive** app (the target's baseline: the same retrieval, reranking, prompt, verifier
   and model weights, the model called with transformers ``generate`` per request) and the same
   pipeline on the **vLLM engine, sequential** (its single-stream speed, shown for reference):
   answers/s, tokens/s, latency p50/p95.
2. **Bare vLLM server** (the ceiling): ``python -m vllm.entrypoints.openai.api_server`` on the same
   converted model (fixed flags, :data:`BARE_FLAGS`: 32-token blocks, eager, 2048 tokens,
   16 sequences), fed the exact chat messages the pipeline would send (``/v1/chat/completions``,
   streamed, with the pipeline's sampling: the generator's ``max_tokens``, ``temperature`` and
   ``top_p``) by 1 and 8 closed-loop clients.
3. **The Serve app**: ``servewise serve --port PORT``; cold start (spawn to the first 200 from
   ``/healthz``), then 1, 4, 8 and 16 closed-loop clients on ``POST /v1/ask/stream`` (server-sent
   events read to the end): latency and TTFT p50/p95 (client side), answers/s, tokens/s (and the steady
   rate while every client is in flight), Serve overhead p50/p95 (the answer's ``serve_overhead_ms``),
   the generator hop p50/p95 (``wait_generator_ms``: ingress -> generator -> ingress, model time
   excluded), the retriever and reranker waits p50 (``wait_retriever_ms``, ``wait_reranker_ms``) and
   the part of the retriever's wait spent in its batch queue, p50/p95 (``queued_retriever_ms``);
   ``/metrics`` is scraped every ~2 s for the RUNNING replicas and the mean queue wait per deployment.
4. **Report**: the figures, and the ratios against the targets (Serve tokens/s at 8 clients over the
   bare server's >= 0.85, Serve answers/s at 8 over naive >= 6, Serve overhead p50 at 8 <= 30 ms,
   generator hop p50 at 8 <= 30 ms, cold start <= 60 s), plus answers/s at 8 over the sequential
   vLLM pipeline and the bare server's own ratio, with no target. "Serve overhead" is read strictly:
   the whole path from the ingress through the retriever, the reranker and the generator and back
   (the sum of the three hops' waits, queueing included), model time excluded; the generator hop
   alone is also reported.

Before its first level each server answers one warm-up question per client of the widest level, all
at once, unmeasured: the first burst after a start runs slower than the ones after it (over eight
fresh Serve apps, the whole overhead p50 at 8 clients was 45 ms, median, in the first round of 32
answers, 28-121 ms, and 32 ms in the rounds after it, 13-62 ms; ``bench/serve_rounds.py`` shows it
round by round).

Clients are closed loops (each sends its next question when its answer arrived). Every level gets its
own in-scope dev questions (repeated prompts would hit vLLM's prefix cache); the bare server and the
Serve app get the same questions at the same level. Tokens are counted by re-tokenizing the text with
the model's tokenizer. Only one model-serving process runs at a time; each server is stopped (SIGINT,
SIGTERM after 30 s, SIGKILL after 60 s) and the processes it left (its descendants, and whatever carries
its environment tag) are killed by PID before the next part; Ray processes still running then are
reported, and killed with ``ray stop --force`` only when ``--ray-stop`` is given (it kills every Ray
process on the machine: use it when the benchmark runs alone).

Modules: :mod:`procs` (processes), :mod:`serve_http` (the Serve app's client side and ``/metrics``),
:mod:`serve_parts` (clients, the bare server's command, one Serve level),
:mod:`serve_report` (ratios and tables); this one plans and runs the parts.

    .venv/bin/python bench/serve.py [--levels 1,4,8,16] [--requests-per-client 3] [--naive-requests 6]
        [--skip-naive] [--skip-bare] [--port P] [--data-dir D] [--ray-stop] [--json]
        [--set serve.retriever.num_replicas=2 ...]   # settings for the Serve app only

It asserts nothing; timings depend on the machine and on what else runs on it. Its parts run minutes
apart, so the Serve/bare ratio moves with the machine's speed between them: ``bench/serve_paired.py``
alternates rounds between both servers kept up together and reports medians over the pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from answer import questions
from common import CLI, loadavg, log, make_settings, run_cli
from naive import baselines_in_process
from procs import NAME, free_port, log_tail, ray_stop_force, running
from serve_http import ask_one
from serve_parts import (
    BARE_FLAGS,
    bare_command,
    bare_one,
    bench_client,
    closed_loop,
    serve_level,
    summarize,
    write_sets,
)
from serve_report import ratios, report

# -- 2. bare vLLM server -----------------------------------------------------------------------


async def bare(
    settings: Any, model_dir: str, prompts: dict[int, list], warm: list, tokenizer: Any, logs: Path
) -> dict[str, Any]:
    """Start the bare server, run each level of ``prompts`` (concurrency -> messages), stop it."""
    from assistant.vllm_generator import vllm_env

    port = free_port()
    from assistant.generator import GenerationParams

    base, params = f"http://127.0.0.1:{port}", GenerationParams.from_settings(settings.generator)

    async def measure(client: httpx.AsyncClient, out: dict[str, Any], _: Any) -> None:
        def call(m: list) -> Awaitable[dict[str, Any]]:
            return bare_one(client, f"{base}/v1/chat/completions", m, params, tokenizer)

        await closed_loop(call, warm, len(warm))
        for concurrency, messages in prompts.items():
            log(NAME, f"bare: {concurrency} clients, {len(messages)} requests")
            out["levels"].append(summarize(await closed_loop(call, messages, concurrency), concurrency))

    env, cmd = vllm_env(settings.generator), bare_command(model_dir, port)
    return await with_server("bare", cmd, env, f"{base}/health", logs, measure)


async def with_server(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    health: str,
    logs: Path,
    measure: Callable[[httpx.AsyncClient, dict[str, Any], Callable[[], None]], Awaitable[None]],
) -> dict[str, Any]:
    """Spawn a server, time it to the first 200 from ``health``, ``measure``, stop it (even on errors).

    ``measure`` gets a client, the part's figures to fill in and a callable that updates the tracker.
    """
    out: dict[str, Any] = {"levels": []}
    try:
        async with running(name, cmd, env, health, logs, out) as (proc, tracker), bench_client() as client:
            await measure(client, out, lambda: tracker.update(proc.pid))
    except Exception as exc:  # the other parts still report
        out["error"] = f"{type(exc).__name__}: {exc}\n{log_tail(logs, name)}"
        log(NAME, f"{name} failed: {type(exc).__name__}: {exc}")
    return out


# -- 3. the Serve app --------------------------------------------------------------------------


async def serve_app(
    data_dir: Path,
    port: int,
    levels: dict[int, list[str]],
    warm: list[str],
    tokenizer: Any,
    logs: Path,
    config: Path | None = None,
) -> dict[str, Any]:
    """Start ``servewise serve``, measure its cold start and each level, stop it."""
    base = f"http://127.0.0.1:{port}"

    async def measure(client: httpx.AsyncClient, out: dict[str, Any], track: Callable[[], None]) -> None:
        out["ready_line"] = await ready_line(logs / "serve.out")
        await closed_loop(lambda q: ask_one(client, f"{base}/v1/ask/stream", q, tokenizer), warm, len(warm))
        for concurrency, qs in levels.items():
            log(NAME, f"Serve app: {concurrency} clients, {len(qs)} requests")
            out["levels"].append(await serve_level(client, base, qs, concurrency, tokenizer))
            track()

    cmd = [str(CLI), *(["--config", str(config)] if config else []), "--data-dir", str(data_dir)]
    cmd += ["serve", "--port", str(port)]
    out = await with_server("serve", cmd, {}, f"{base}/healthz", logs, measure)
    return {"cold_start_s": out.pop("start_s", None), **out}


async def ready_line(stdout: Path, wait_s: float = 15.0) -> bool:
    """Whether the server printed a line containing ``ready`` (waiting up to ``wait_s``)."""
    deadline = time.perf_counter() + wait_s
    while "ready" not in stdout.read_text():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.25)
    return True


# -- plan, run, report -------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Questions: one per client of the widest level to warm up (sent at once), a distinct slice per
    level; naive takes the 8-client slice's first."""
    levels = sorted(set(args.levels) | (set() if args.skip_bare else {1, 8}))
    offset, slices = max(levels), {}
    for c in levels:
        slices[c] = (offset, offset + c * args.requests_per_client)
        offset = slices[c][1]
    start8 = slices.get(8, (offset, offset))[0]
    pool = questions(max(offset, start8 + args.naive_requests))
    distinct = len(set(questions(10_000)))
    if len(pool) > distinct:
        log(NAME, f"{len(pool)} questions wanted, {distinct} distinct: some repeat (prefix cache hits)")
    return {
        "warm": pool[: max(levels)],
        "levels": {c: pool[a:b] for c, (a, b) in slices.items()},
        "naive": [] if args.skip_naive else pool[start8 : start8 + args.naive_requests],
    }


async def baselines(
    args: argparse.Namespace, settings: Any, model_dir: str, qs: dict[str, Any], tokenizer: Any, logs: Path
) -> dict[str, Any]:
    """Parts 1 and 2: the in-process baselines (which also build the bare server's prompts), the bare
    server."""
    bare_levels = {} if args.skip_bare else {c: qs["levels"][c] for c in (1, 8)}
    if not qs["naive"] and not bare_levels:
        return {}
    prompt_qs = qs["warm"] + [q for level in bare_levels.values() for q in level]
    plan = {"naive": qs["naive"], "warm": qs["warm"][0], "prompt_qs": prompt_qs}
    out, prompts = await baselines_in_process(settings, model_dir, plan, tokenizer, (closed_loop, summarize))
    if bare_levels:
        by_q = dict(zip(prompt_qs, prompts, strict=True))
        levels = {c: [by_q[q] for q in level] for c, level in bare_levels.items()}
        out["bare"] = await bare(settings, model_dir, levels, prompts[: len(qs["warm"])], tokenizer, logs)
    return out


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Ingest, run the three parts, compare to the targets."""
    from transformers import AutoTokenizer

    from assistant.models import resolve_generator_model

    data_dir = Path(args.data_dir) if args.data_dir else work / "data"
    logs = work / "logs"
    logs.mkdir()
    log(NAME, f"ingesting corpus/ into {data_dir} (load {loadavg()})")
    out: dict[str, Any] = {"data_dir": str(data_dir)}
    out["ingest_s"] = run_cli(["--data-dir", str(data_dir), "ingest", "corpus/"])[0]
    settings = make_settings(data_dir)
    model_dir = resolve_generator_model(settings.generator, data_dir)  # converts the packaged model once
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    keys = ("executor", "max_num_seqs", "max_model_len", "block_size", "enforce_eager", "max_tokens")
    keys += ("temperature",)
    out["generator_settings"] = {k: getattr(settings.generator, k, None) for k in keys}
    qs = plan(args)
    out |= await baselines(args, settings, model_dir, qs, tokenizer, logs)
    levels = {c: qs["levels"][c] for c in sorted(args.levels)}
    port = args.port or free_port()
    config = write_sets(args.set, work)
    out["serve_settings"] = args.set
    out["serve"] = await serve_app(data_dir, port, levels, qs["warm"], tokenizer, logs, config)
    if args.ray_stop and out["serve"]["stop"]["ray_left"]:
        ray_stop_force()
    out["ratios"] = ratios(out)
    out["load_avg"] = loadavg()
    return out


def main() -> None:
    """Parse the arguments, run the benchmark, print the report (or the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--naive-requests", type=int, default=6)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--port", type=int, default=None, help="the Serve app's port (default: a free one)")
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary one")
    last_resort = "when Ray processes are left: ray stop --force (kills EVERY Ray process on the machine)"
    parser.add_argument("--ray-stop", action="store_true", help=last_resort)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--set", action="append", default=[], help="Serve app setting, e.g. serve.retriever.num_replicas=2"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sw-bench-serve-") as work:
        result = asyncio.run(main_async(args, Path(work)))
    print(json.dumps(result, indent=2, default=str)) if args.json else report(result, BARE_FLAGS)


if __name__ == "__main__":
    main()
