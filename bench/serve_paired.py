"""Paired rounds: the Serve app and the bare vLLM server up side by side, measured in alternating
rounds, so the target ratios do not depend on how fast the machine happens to be during one part.

``bench/serve.py`` runs its parts one after another, minutes apart. On this shared 2-core machine the
bare server alone made 177-225 tokens/s at 8 clients from one run to the next, which moved the
Serve/bare ratio by more than the effect being measured. Here both servers are up at once and take
turns: pair ``i`` runs one round on each (the bare server first in even pairs, the Serve app first in
odd ones, so a drift within a pair cancels out over the pairs), both on the same distinct questions,
the bare server fed the exact messages the pipeline would send. The figures are medians over the pairs:

* tokens/s of the Serve app over the bare server's, per pair (target >= 0.85);
* the Serve app's overhead p50 (all three hops, model time excluded; target <= 30 ms) and its generator
  hop p50 (target <= 30 ms), per round;
* the cold start of ``servewise serve`` (target <= 60 s), measured before the bare server starts;
* the CPU the other server used during a round (% of one core): it is frozen meanwhile (SIGSTOP to
  every process it started, SIGCONT after the round), so this should read 0. Left running, the idle
  Serve app took 16-17% of a core during the bare server's rounds (a dozen Ray processes at 1-2.5%
  each), which would have handicapped the ceiling.

Before the first pair each server answers one warm-up question per client, all at once, unmeasured.
The naive baseline and the other concurrency levels stay in ``bench/serve.py``.

    .venv/bin/python bench/serve_paired.py [--pairs 3] [--clients 8] [--requests-per-client 3]
        [--rotate 0] [--ray-stop] [--json]
        [--set generator.max_num_seqs=16 ...]   # settings for the Serve app only

It asserts nothing; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from answer import prompts_for, questions
from common import CLI, grid, loadavg, log, make_settings, run_cli, table
from procs import NAME, Tracker, free_port, ray_stop_force, running
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
from serve_report import fmt, judged

Server = tuple[subprocess.Popen, Tracker]
HOPS = ("retriever_wait_p50_ms", "reranker_wait_p50_ms", "generator_hop_p50_ms")


def plan(pairs: int, clients: int, per_client: int, rotate: int = 0) -> dict[str, Any]:
    """One warm-up question per client, then a distinct slice of questions per pair (the slices
    rotated by ``rotate``, so that a slice can be run in the other order)."""
    per_round = clients * per_client
    pool = questions(clients + pairs * per_round)
    if len(pool) > len(set(questions(10_000))):
        log(NAME, f"{len(pool)} questions wanted, fewer distinct: some repeat (prefix cache hits on both)")
    rounds = [pool[clients + i * per_round : clients + (i + 1) * per_round] for i in range(pairs)]
    return {"warm": pool[:clients], "rounds": rounds[rotate % pairs :] + rounds[: rotate % pairs]}


async def messages_for(settings: Any, qs: list[str]) -> dict[str, list[dict[str, str]]]:
    """The exact chat messages the pipeline sends for each question (retrieval in this process)."""
    from assistant.pipeline import Assistant

    assistant = Assistant.from_config(settings)
    try:
        return dict(zip(qs, await prompts_for(assistant, qs), strict=True))
    finally:
        await assistant.generator.close()


class Pair:
    """The two running servers and how to send a round to each."""

    def __init__(self, client: httpx.AsyncClient, urls: dict[str, str], ctx: dict[str, Any]) -> None:
        self.client, self.urls, self.ctx = client, urls, ctx
        self.servers: dict[str, Server] = {}

    async def round(self, name: str, qs: list[str], concurrency: int) -> dict[str, Any]:
        """One round of ``concurrency`` closed-loop clients on ``name``, the other server frozen
        (SIGSTOP to every process it started, SIGCONT after); the CPU it used meanwhile."""
        other = self.servers["bare" if name == "serve" else "serve"][1]
        for proc, tracker in self.servers.values():
            tracker.update(proc.pid)
        before, started = other.cpu_s(), time.perf_counter()
        other.send(signal.SIGSTOP)
        try:
            if name == "serve":
                tok = self.ctx["tokenizer"]
                out = await serve_level(self.client, self.urls["serve"], qs, concurrency, tok)
            else:
                run = await self.bare_loop([self.ctx["messages"][q] for q in qs], concurrency)
                out = summarize(run, concurrency)
        finally:
            other.send(signal.SIGCONT)
        idle_cpu = (other.cpu_s() - before) / (time.perf_counter() - started) * 100
        return out | {"server": name, "other_idle_cpu_pct": idle_cpu}

    async def warm(self, name: str, qs: list[str]) -> None:
        """Every warm-up question at once, unmeasured."""
        if name == "serve":
            url, tok = f"{self.urls['serve']}/v1/ask/stream", self.ctx["tokenizer"]
            await closed_loop(lambda q: ask_one(self.client, url, q, tok), qs, len(qs))
        else:
            await self.bare_loop([self.ctx["messages"][q] for q in qs], len(qs))

    async def bare_loop(self, messages: list, concurrency: int) -> dict[str, Any]:
        url, params, tok = (
            f"{self.urls['bare']}/v1/chat/completions",
            self.ctx["params"],
            self.ctx["tokenizer"],
        )
        return await closed_loop(lambda m: bare_one(self.client, url, m, params, tok), messages, concurrency)


async def run_pairs(args: argparse.Namespace, work: Path, ctx: dict[str, Any], qs: dict) -> dict[str, Any]:
    """Start the Serve app (cold start alone), then the bare server; the rounds; stop both."""

    logs, ports = work / "logs", {"serve": args.port or free_port(), "bare": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    config = write_sets(args.set, work)
    serve_cmd = [str(CLI), *(["--config", str(config)] if config else []), "--data-dir", str(ctx["data_dir"])]
    serve_cmd += ["serve", "--port", str(ports["serve"])]
    out: dict[str, Any] = {"serve": {}, "bare": {}, "rounds": []}
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(bench_client())
        pair = Pair(client, urls, ctx)
        health = {"serve": f"{urls['serve']}/healthz", "bare": f"{urls['bare']}/health"}
        cmds = {"serve": (serve_cmd, {}), "bare": (bare_command(ctx["model_dir"], ports["bare"]), ctx["env"])}
        for name in ("serve", "bare"):
            cmd, env = cmds[name]
            server = running(name, cmd, env, health[name], logs, out[name])
            pair.servers[name] = await stack.enter_async_context(server)
            await pair.warm(name, qs["warm"])
        for i, round_qs in enumerate(qs["rounds"]):
            for name in ("bare", "serve") if i % 2 == 0 else ("serve", "bare"):
                log(NAME, f"pair {i + 1}: {name}, {args.clients} clients, {len(round_qs)} requests")
                out["rounds"].append(await pair.round(name, round_qs, args.clients) | {"pair": i + 1})
    out["config"] = {"vllm_env": ctx["env"], "bare_flags": BARE_FLAGS, "serve_settings": args.set}
    return out


def medians(r: dict[str, Any]) -> dict[str, Any]:
    """The figures against the targets: medians over the pairs (None where rounds failed)."""

    def of(name: str, key: str) -> list[float]:
        return [x[key] for x in rounds if x["server"] == name and x.get(key) is not None]

    rounds, start_s = r.get("rounds", []), r.get("serve", {}).get("start_s")
    by_pair: dict[int, dict[str, float]] = {}
    for x in rounds:
        by_pair.setdefault(x["pair"], {})[x["server"]] = x["tokens_per_s"]
    ratios = [p["serve"] / p["bare"] for p in by_pair.values() if p.get("bare") and "serve" in p]
    values = {
        "serve_vs_bare_tokens_8": ratios,
        "serve_overhead_p50_ms_8": of("serve", "serve_overhead_p50_ms"),
        "serve_generator_hop_p50_ms_8": of("serve", "generator_hop_p50_ms"),
        "cold_start_s": [start_s] if start_s is not None else [],
    }
    return {k: judged(k, statistics.median(vs) if vs else None) | {"each": vs} for k, vs in values.items()}


def report(r: dict[str, Any]) -> None:
    """Plain-text tables: every round, then the medians against the targets."""
    rows = [
        {
            "pair": str(x["pair"]),
            "server": x["server"],
            "errors": str(x["errors"]),
            "tok/s": fmt(x["tokens_per_s"], ".1f"),
            "answers/s": fmt(x["answers_per_s"], ".2f"),
            "lat p50 ms": fmt(x["latency_p50_ms"]),
            "overhead p50/p95 ms": f"{fmt(x.get('serve_overhead_p50_ms'), '.1f')}/"
            f"{fmt(x.get('serve_overhead_p95_ms'), '.1f')}",
            "retr/rerank/gen p50 ms": "/".join(fmt(x.get(k), ".1f") for k in HOPS),
            "retr to/queue/back p50 ms": "/".join(
                fmt(x.get(f"retriever_{k}_p50_ms"), ".1f") for k in ("to", "queued", "back")
            ),
            "retr queue p95 ms": fmt(x.get("retriever_queued_p95_ms"), ".1f"),
            "other's idle CPU %": fmt(x["other_idle_cpu_pct"], ".1f"),
        }
        for x in r.get("rounds", [])
    ]
    print(grid(f"Rounds ({r['clients']} clients each; load {r['load_avg']})", rows) if rows else "no rounds")
    serve, bare = r.get("serve", {}), r.get("bare", {})
    starts = [("cold start of servewise serve", f"{fmt(serve.get('start_s'), '.1f')} s")]
    starts.append(("bare server's start (machine speed)", f"{fmt(bare.get('start_s'), '.1f')} s"))
    print("\n" + table("Starts", starts))
    lines = []
    for key, m in r["medians"].items():
        each = ", ".join(fmt(v, ".2f") for v in m["each"])
        verdict = {True: "met", False: "NOT met", None: "n/a"}[m["met"]]
        lines.append((key, f"{fmt(m['value'], '.2f')} (target {m['target']}: {verdict}; each: {each})"))
    print("\n" + table("Medians over the pairs", lines))
    if r.get("error"):
        print(f"\nfailed: {r['error']}")


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Ingest, build the bare server's messages, run the pairs, take the medians."""
    from transformers import AutoTokenizer

    from assistant.generator import GenerationParams
    from assistant.models import resolve_generator_model
    from assistant.vllm_generator import vllm_env

    data_dir = work / "data"
    (work / "logs").mkdir()
    log(NAME, f"ingesting corpus/ into {data_dir} (load {loadavg()})")
    run_cli(["--data-dir", str(data_dir), "ingest", "corpus/"])
    settings = make_settings(data_dir)
    model_dir = resolve_generator_model(settings.generator, data_dir)
    qs = plan(args.pairs, args.clients, args.requests_per_client, args.rotate)
    ctx = {
        "data_dir": data_dir,
        "model_dir": model_dir,
        "tokenizer": AutoTokenizer.from_pretrained(model_dir),
        "params": GenerationParams.from_settings(settings.generator),
        "env": vllm_env(settings.generator),
        "messages": await messages_for(settings, qs["warm"] + [q for r in qs["rounds"] for q in r]),
    }
    out: dict[str, Any] = {"clients": args.clients}
    try:
        out |= await run_pairs(args, work, ctx, qs)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    if args.ray_stop and out.get("serve", {}).get("stop", {}).get("ray_left"):
        ray_stop_force()
    out["medians"], out["load_avg"] = medians(out), loadavg()
    return out


def main() -> None:
    """Parse the arguments, run the pairs, print the report (or the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--rotate", type=int, default=0, help="give pair i the questions of pair i+N")
    parser.add_argument("--port", type=int, default=None, help="the Serve app's port (default: a free one)")
    last_resort = "when Ray processes are left: ray stop --force (kills EVERY Ray process on the machine)"
    parser.add_argument("--ray-stop", action="store_true", help=last_resort)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="Serve app setting, e.g. serve.port=8001")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sw-bench-paired-") as work:
        result = asyncio.run(main_async(args, Path(work)))
    print(json.dumps(result, indent=2, default=str)) if args.json else report(result)


if __name__ == "__main__":
    main()
