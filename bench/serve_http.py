"""The client side of the Serve benchmark (bench/serve.py): one request's figures, the Serve app's
``POST /v1/ask/stream`` read as server-sent events, and its ``/metrics`` scraped and summarized.

Each Serve answer's ``timings`` carry ``serve_overhead_ms`` (handle round trips minus the deployments'
own time, summed over the hops), per hop, ``wait_retriever_ms``, ``wait_reranker_ms`` and
``wait_generator_ms``, and ``queued_retriever_ms`` (the part of the retriever's wait spent in its
batch queue); :func:`hop_figures` turns them into per-level percentiles.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from answer import pct as nearest_rank

TIMEOUT = httpx.Timeout(600.0, connect=10.0)
SCRAPE_EVERY_S = 2.0
#: The answer's per-hop waits (``timings`` keys), kept per request under the same names.
HOP_KEYS = (
    "wait_retriever_ms",
    "wait_reranker_ms",
    "wait_generator_ms",
    "queued_retriever_ms",
    "to_retriever_ms",
    "back_retriever_ms",
)


# -- one request's figures ---------------------------------------------------------------------


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


# -- POST /v1/ask/stream -----------------------------------------------------------------------


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


def number(value: Any) -> float | None:
    """``value`` when it is a number (not a bool), else None."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def answer_checks(answer: dict[str, Any] | None, state: dict[str, Any]) -> dict[str, float | None]:
    """The answer's ``serve_overhead_ms`` (as ``overhead_ms``) and per-hop waits (:data:`HOP_KEYS`),
    None where missing; what the answer lacks goes to ``problems`` (the waits are optional)."""
    if answer is None:
        if not state["error"]:
            state["problems"].append("the stream ended without an answer or error event")
        return {"overhead_ms": None} | dict.fromkeys(HOP_KEYS)
    timings = answer.get("timings") if isinstance(answer.get("timings"), dict) else {}
    wanted = ("retrieve_ms", "rerank_ms", "generate_ms", "total_ms", "serve_overhead_ms")
    if missing := [k for k in wanted if k not in timings]:
        state["problems"].append(f"answer.timings lacks {', '.join(missing)}")
    if state["parts"] and "first_token_ms" not in timings:
        state["problems"].append("answer.timings lacks first_token_ms")
    return {"overhead_ms": timings.get("serve_overhead_ms")} | {k: number(timings.get(k)) for k in HOP_KEYS}


async def read_answer(client: httpx.AsyncClient, url: str, question: str, state: dict[str, Any]) -> None:
    """Send ``question`` and fold the response's events into ``state`` (HTTP errors included)."""
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


async def ask_one(client: httpx.AsyncClient, url: str, question: str, tokenizer: Any) -> dict[str, Any]:
    """One ``POST /v1/ask/stream``, its events read to the end."""
    t0 = time.perf_counter()
    state: dict[str, Any] = {"parts": [], "stamps": [], "answer": None, "error": None, "problems": []}
    await read_answer(client, url, question, state)
    timings = answer_checks(state["answer"], state)
    return record(
        t0,
        state["parts"],
        state["stamps"],
        tokenizer,
        error=state["error"],
        problems=state["problems"],
        **timings,
    )


def hop_figures(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per level: the generator hop's p50/p95 (ingress -> generator -> ingress, model time excluded)
    and the retriever's and reranker's wait p50 (the retriever's split into the way to its replica,
    its batch queue and the way back), over the answered requests (None when none)."""

    def values(key: str) -> list[float]:
        return [r[key] for r in results if not r["error"] and r.get(key) is not None]

    return {
        "generator_hop_p50_ms": pct(values("wait_generator_ms"), 0.5),
        "generator_hop_p95_ms": pct(values("wait_generator_ms"), 0.95),
        "retriever_wait_p50_ms": pct(values("wait_retriever_ms"), 0.5),
        "reranker_wait_p50_ms": pct(values("wait_reranker_ms"), 0.5),
        "retriever_queued_p50_ms": pct(values("queued_retriever_ms"), 0.5),
        "retriever_queued_p95_ms": pct(values("queued_retriever_ms"), 0.95),
        "retriever_to_p50_ms": pct(values("to_retriever_ms"), 0.5),
        "retriever_back_p50_ms": pct(values("back_retriever_ms"), 0.5),
    }


# -- /metrics ----------------------------------------------------------------------------------


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
    return metric_checks(out, last)


def metric_checks(out: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """``out`` with the metrics missing from the ``last`` scrape and a deployment-label mismatch."""
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
