"""The Serve benchmark's report (bench/serve.py): the figures against the targets, plain-text tables."""

from __future__ import annotations

import math
from typing import Any

from common import grid, table

TARGETS = {
    "serve_vs_bare_tokens_8": (">=", 0.85),
    "serve_vs_naive_answers_8": (">=", 6.0),
    "serve_overhead_p50_ms_8": ("<=", 30.0),
    "serve_generator_hop_p50_ms_8": ("<=", 30.0),
    "cold_start_s": ("<=", 60.0),
}
HOPS_TITLE = "Serve app hops, ms (handle round trip minus the deployment's own time; overhead: all 3 hops)"


def level(part: dict[str, Any] | None, concurrency: int) -> dict[str, Any] | None:
    """A part's figures at ``concurrency`` clients, if it ran that level."""
    return next((lv for lv in (part or {}).get("levels", []) if lv["concurrency"] == concurrency), None)


#: Ratios printed for reference, with no target.
REFERENCE = ("serve_vs_vllm_sequential_answers_8", "bare_vs_naive_answers_8")


def per_s(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None, key: str) -> float | None:
    """``numerator[key] / denominator[key]``, None when either is missing."""
    return numerator[key] / denominator[key] if numerator and denominator else None


def judged(key: str, value: float | None) -> dict[str, Any]:
    """``value`` against the target named ``key``: ``{"value", "target", "met"}`` (met None: no value)."""
    op, target = TARGETS[key]
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": f"{op} {target}", "met": met}


def ratios(r: dict[str, Any]) -> dict[str, Any]:
    """The figures compared to the targets (None where a part, level or figure is missing)."""
    s8, b8, naive = level(r.get("serve"), 8), level(r.get("bare"), 8), r.get("naive")
    values = {
        "serve_vs_bare_tokens_8": per_s(s8, b8, "tokens_per_s"),
        "serve_vs_naive_answers_8": per_s(s8, naive, "answers_per_s"),
        "serve_overhead_p50_ms_8": s8["serve_overhead_p50_ms"] if s8 else None,
        "serve_generator_hop_p50_ms_8": s8.get("generator_hop_p50_ms") if s8 else None,
        "cold_start_s": r["serve"]["cold_start_s"],
    }
    out = {key: judged(key, value) for key, value in values.items()}
    reference = (per_s(s8, r.get("vllm_sequential"), "answers_per_s"), per_s(b8, naive, "answers_per_s"))
    for key, value in zip(REFERENCE, reference, strict=True):
        out[key] = {"value": value, "target": None, "met": None}
    return out


def fmt(value: Any, spec: str = ".0f") -> str:
    """A number, or n/a for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def level_row(lv: dict[str, Any]) -> dict[str, str]:
    """One level's client-side figures as a table row."""
    return {
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


def hop_row(lv: dict[str, Any]) -> dict[str, str]:
    """One Serve level's own timings (from each answer's ``timings``) as a table row; n/a when missing."""
    return {
        "clients": str(lv["concurrency"]),
        "overhead p50": fmt(lv.get("serve_overhead_p50_ms"), ".1f"),
        "overhead p95": fmt(lv.get("serve_overhead_p95_ms"), ".1f"),
        "gen hop p50": fmt(lv.get("generator_hop_p50_ms"), ".1f"),
        "gen hop p95": fmt(lv.get("generator_hop_p95_ms"), ".1f"),
        "retr wait p50": fmt(lv.get("retriever_wait_p50_ms"), ".1f"),
        "retr batch queue p50/p95": f"{fmt(lv.get('retriever_queued_p50_ms'), '.1f')}"
        f"/{fmt(lv.get('retriever_queued_p95_ms'), '.1f')}",
        "rerank wait p50": fmt(lv.get("reranker_wait_p50_ms"), ".1f"),
    }


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


def level_notes(part: str, lv: dict[str, Any]) -> list[str]:
    """One level's errors, protocol problems and metrics problems."""
    tag = f"{part} @{lv['concurrency']}"
    out = [f"{tag}: error {e}" for e in lv["error_samples"]]
    out += [f"{tag}: {p}" for p in lv["problems"]]
    m = lv.get("metrics", {})
    out += [f"{tag}: /metrics scrape failed: {f}" for f in m.get("failed", [])]
    if mismatch := m.get("label_mismatch"):
        out.append(f"{tag}: the deployment label differs between metrics: {mismatch}")
    if m.get("missing_metrics"):
        seen = ", ".join(m.get("metric_names_seen", [])) or "none"
        out.append(f"{tag}: metrics missing: {', '.join(m['missing_metrics'])} (seen: {seen})")
    return out


def notes(r: dict[str, Any]) -> list[str]:
    """Errors, protocol problems, missing metrics and leftover processes."""
    out = []
    for part in ("bare", "serve"):
        for lv in (r.get(part) or {}).get("levels", []):
            out += level_notes(part, lv)
        stopped = (r.get(part) or {}).get("stop", {})
        out += [f"{part}: leftover killed by PID: {p}" for p in stopped.get("leftovers_killed", [])]
        out += [f"{part}: Ray process still running after stop: {p}" for p in stopped.get("ray_left", [])]
    if r.get("serve") and not r["serve"].get("ready_line"):
        out.append("serve: no line containing 'ready' on stdout by the time /healthz answered 200")
    return out


def part_grid(title: str, part: dict[str, Any], serve: bool) -> str:
    """A server part's levels (the Serve app's with its hops), or why it has none."""
    if part.get("error"):
        return f"{title}: FAILED\n{part['error']}"
    out = grid(title, [level_row(lv) for lv in part["levels"]])
    if serve and part["levels"]:
        out += "\n" + grid(HOPS_TITLE, [hop_row(lv) for lv in part["levels"]])
    return out


def target_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Each ratio against its target (the reference ratios without one)."""
    rows = []
    for key, v in r["ratios"].items():
        if v["target"] is None:
            rows.append((key, f"{fmt(v['value'], '.2f')}  (reference, no target)"))
            continue
        met = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
        rows.append((key, f"{fmt(v['value'], '.2f')}  (target {v['target']}: {met})"))
    return rows


def report(r: dict[str, Any], bare_flags: list[str]) -> None:
    """Plain-text tables (``bare_flags``: the bare server's engine flags)."""
    print(f"data dir {r['data_dir']}; ingest {r['ingest_s']:.1f} s; load average at the end {r['load_avg']}")
    print(f"generator settings (vLLM in-process and Serve app): {r['generator_settings']}")
    print(f"bare server flags: {' '.join(bare_flags)}")
    for key, what in (("naive", "Naive: transformers generate"), ("vllm_sequential", "vLLM in-process")):
        if n := r.get(key):
            title = f"{what} (whole pipeline, sequential; model load {n['engine_start_s']:.1f} s)"
            print(grid(title, [level_row(n)]))
    if b := r.get("bare"):
        print(part_grid(f"Bare vLLM server (start {fmt(b.get('start_s'), '.1f')} s)", b, False))
    s = r["serve"]
    print(part_grid(f"Serve app (cold start {fmt(s['cold_start_s'], '.1f')} s)", s, True))
    if s["levels"]:
        print(grid("Serve metrics (/metrics every ~2 s)", metric_rows(s["levels"])))
    print(table("Targets", target_rows(r)))
    for name in ("bare", "serve"):
        if stopped := (r.get(name) or {}).get("stop"):
            how = stopped["signal"] or "had exited"
            print(f"{name} stopped: {how}, {stopped['stop_s']:.1f} s, exit status {stopped['returncode']}")
    if problems := notes(r):
        print(table("Problems seen", [(str(i + 1), p) for i, p in enumerate(problems)]))
