"""The evaluation report: one results dict (as saved in ``metrics.json``) -> ``report.md`` plus PNG plots.

``results`` holds the dataset, mode, targets and a list of runs (the first is the baseline); each run
carries ``metrics`` from :func:`eval.metrics.score` and ``rows`` from :func:`eval.metrics.rows` (each row
also with ``category`` and ``question``). The plots are drawn by :mod:`eval.plots` when matplotlib is
installed; without it the report is written all the same and says so in one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from eval.definitions import CAPTIONS, HEADLINE, JUDGE_DEFINITIONS, METRICS, SCORES
from eval.plots import (
    bounds,
    category_stats,
    expected_text,
    got_text,
    latency,
    leaf,
    row_problems,
    stages,
    target_met,
    value_of,
    write_plots,
)

MATPLOTLIB_HINT = "plots need matplotlib: pip install 'servewise[eval]'"
FAILURE_CAP = 40
QUESTION_CHARS = 100

# ------------------------------------------------------------------------------------------ values


def is_score(path: str) -> bool:
    """Whether the metric at a path is a score (MRR, macro-F1) rather than a share (shown in percent)."""
    return path in SCORES


def fmt(value: float | None, path: str = "") -> str:
    """A metric value as text: a share in percent with one decimal, a score with three; ``n/a`` for None."""
    if value is None:
        return "n/a"
    return f"{value:.3f}" if is_score(path) else f"{100 * value:.1f}%"


def fmt_seconds(seconds: float | None) -> str:
    """Wall time as ``5 min 21.5 s`` (or ``n/a``)."""
    if seconds is None:
        return "n/a"
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)} min {rest:.1f} s" if minutes else f"{rest:.1f} s"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds for the latency table."""
    return "–" if ms is None else f"{ms:.1f}" if ms < 10 else f"{ms:,.0f}"


def cell(text: Any) -> str:
    """Text made safe for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in line) + " |" for line in body]


def image(images: Mapping[str, str] | None, name: str) -> list[str]:
    """The Markdown lines embedding one plot and its caption (none when it was not drawn)."""
    if not images or name not in images:
        return []
    return [f"![{name} plot]({images[name]})", "", f"*{CAPTIONS[name]}*"]


def section(title: str, *parts: str | list[str]) -> list[str]:
    """A ``## title`` section: each non-empty part (a paragraph or a list of lines) then a blank line."""
    lines = [f"## {title}", ""]
    for part in parts:
        if part:
            lines += [part, ""] if isinstance(part, str) else [*part, ""]
    return lines


# ----------------------------------------------------------------------------------------- sections


def summary_section(results: Mapping[str, Any], images: Mapping[str, str] | None) -> list[str]:
    """Title, summary paragraph, verdict and (without matplotlib) the install hint."""
    base = results["runs"][0]
    answered = (base.get("metrics") or {}).get("answered", "?")
    text = (
        f"This report scores ServeWise answers on **{results.get('items')} items** from "
        f"`{results.get('dataset')}`, asked {mode_text(results)}, with model **{models_text(results)}**, "
        f"on {created_text(results)}. {time_text(results)} In the baseline {answered} items were answered, "
        f"{len(base.get('skipped') or [])} skipped and {len(base.get('errors') or [])} errored (listed "
        "under Failures). Percentages are shares of the items that carry the label a metric needs; n says "
        "how many items (or citations) a value is based on."
    )
    lines = ["# ServeWise evaluation report", "", text, "", verdict(results), ""]
    return [*lines, MATPLOTLIB_HINT, ""] if images is None else lines


def mode_text(results: Mapping[str, Any]) -> str:
    """How the questions were asked: in-process or against an endpoint."""
    if results.get("mode") == "http":
        return f"over HTTP against {results.get('endpoint')}"
    return "in-process (the assistant called directly)"


def models_text(results: Mapping[str, Any]) -> str:
    """The model, or each run's model when they differ."""
    runs = results["runs"]
    if len({str(r.get("model")) for r in runs}) == 1:
        return str(runs[0].get("model"))
    return ", ".join(f"{r['label']}: {r.get('model')}" for r in runs)


def created_text(results: Mapping[str, Any]) -> str:
    """The creation time as ``YYYY-MM-DD HH:MM UTC`` (as given when it does not parse)."""
    try:
        return datetime.fromisoformat(str(results.get("created"))).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(results.get("created"))


def time_text(results: Mapping[str, Any]) -> str:
    """A sentence on run time (and, with several runs, what is compared)."""
    runs = results["runs"]
    if len(runs) == 1:
        return f"The run took {fmt_seconds(runs[0].get('seconds'))}."
    total = fmt_seconds(sum(r.get("seconds") or 0 for r in runs))
    return f"It compares {len(runs)} runs (baseline `{runs[0]['label']}`); together they took {total}."


def verdict(results: Mapping[str, Any]) -> str:
    """One line: how many targets each run met, and which it missed."""
    targets = results.get("targets") or {}
    if not targets:
        return "**Verdict:** no targets were set."
    parts = []
    for run in results["runs"]:
        met = {t.get("label", k): target_met(value_of(run, k), t) for k, t in targets.items()}
        missed = ", ".join(label for label, m in met.items() if m is False)
        text = f"`{run['label']}` met {list(met.values()).count(True)} of {len(targets)} targets"
        text += f" (missed: {missed})" if missed else ""
        parts.append(text + (f", {n} not measured" if (n := list(met.values()).count(None)) else ""))
    return "**Verdict:** " + "; ".join(parts) + "."


def targets_section(results: Mapping[str, Any], images: Mapping[str, str] | None) -> list[str]:
    """The targets table: value and ✅/❌ per run."""
    targets, runs = results.get("targets") or {}, results["runs"]
    if not targets:
        return []
    body = []
    for key, t in targets.items():
        marks = [(value_of(r, key), target_met(value_of(r, key), t)) for r in runs]
        cells = ["n/a (no items)" if m is None else f"{fmt(v)} {'✅' if m else '❌'}" for v, m in marks]
        body.append([t.get("label", key), " and ".join(f"{s} {100 * b:g}%" for s, b in bounds(t)), *cells])
    note = "✅ met, ❌ missed; n/a (no items): no answered item carries the label, so it was not measured."
    header = ["Metric", "Target", *(r["label"] for r in runs)]
    return section("Targets", table(header, body), note, image(images, "targets"))


def metric_rows(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The METRICS plus one entry per judge metric any run reports."""
    judged = sorted({k for r in runs for k in r.get("judge") or {}})
    extra = {f"judge.{k}": f"Judge {k}: {JUDGE_DEFINITIONS.get(k, 'LLM-judge score')}" for k in judged}
    return {**METRICS, **extra}


def metrics_section(results: Mapping[str, Any], images: Mapping[str, str] | None) -> list[str]:
    """Every metric per run as ``value (n=…)``, with its definition."""
    runs = results["runs"]
    body = []
    for path, text in metric_rows(runs).items():
        name, definition = text.split(": ", 1)
        cells = [f"{fmt(value_of(r, path), path)} (n={(leaf(r, path) or {}).get('n', 0)})" for r in runs]
        body.append([name, *cells, definition])
    k = (runs[0].get("metrics") or {}).get("retrieval", {}).get("k")
    note = f"Retrieval k = {k}." if k else "Retrieval k = the number of passages retrieved for each answer."
    header = ["Metric", *(r["label"] for r in runs), "Definition"]
    return section("All metrics", table(header, body), note, image(images, "confusion"))


def latency_section(results: Mapping[str, Any], images: Mapping[str, str] | None) -> list[str]:
    """p50 / p95 ms per stage and run."""
    runs, names = results["runs"], stages(results["runs"])
    if not names:
        return section("Latency", "No timings were reported by the answers, so there is no latency table.")
    body = [[name.removesuffix("_ms"), *(cell_latency(latency(r, name)) for r in runs)] for name in names]
    note = "Each cell: p50 / p95 in milliseconds (n = answers reporting the stage)."
    header = ["Stage", *(r["label"] for r in runs)]
    return section("Latency", note, table(header, body), image(images, "latency"))


def cell_latency(stat: Mapping[str, Any]) -> str:
    """``p50 / p95 (n=…)`` for one stage of one run."""
    if not stat:
        return "–"
    return f"{fmt_ms(stat.get('p50'))} / {fmt_ms(stat.get('p95'))} (n={stat.get('n', 0)})"


def flatten(overrides: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Nested overrides as ``a.b=value`` strings."""
    out = []
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def diff(run: Mapping[str, Any], base: Mapping[str, Any], path: str, lower_better: bool) -> str:
    """A run's difference from the baseline on one metric, with whether it is better or worse."""
    new, old = value_of(run, path), value_of(base, path)
    if new is None or old is None:
        return "n/a"
    delta = new - old
    text = f"{delta:+.3f}" if is_score(path) else f"{100 * delta:+.1f} pts"
    if abs(delta) < 1e-9:
        return text
    return f"{text} ({'better' if (delta < 0) == lower_better else 'worse'})"


def comparison_section(results: Mapping[str, Any]) -> list[str]:
    """What each run changed and its headline differences from the baseline (only with several runs)."""
    runs = results["runs"]
    if len(runs) < 2:
        return []
    changed = [run_row(r) for r in runs]
    base = runs[0]["label"]
    diffs = table(["Metric", f"{base} (baseline)", *(r["label"] for r in runs[1:])], diff_rows(results))
    header = ["Run", "What changed", "Overrides", "Model", "Time"]
    intro = f"Differences from the baseline `{base}` (pts = percentage points):"
    return section("Comparison", table(header, changed), intro, diffs)


def run_row(run: Mapping[str, Any]) -> list[Any]:
    """A run's row of the comparison: label, description, overrides, model, time."""
    overrides = ", ".join(flatten(run.get("overrides") or {})) or "–"
    label, seconds = f"`{run['label']}`", fmt_seconds(run.get("seconds"))
    return [label, run.get("description", ""), overrides, run.get("model"), seconds]


def diff_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """One row per headline metric (the targets, then HEADLINE): baseline value, then each run's diff."""
    runs, targets = results["runs"], results.get("targets") or {}
    body = []
    for path in dict.fromkeys([*targets, *HEADLINE]):
        target = targets.get(path) or {}
        lower_better = "max" in target or path == "scope.false_decline_rate"
        name = target.get("label") or METRICS.get(path, path).split(": ")[0]
        diffs = [diff(r, runs[0], path, lower_better) for r in runs[1:]]
        body.append([name, fmt(value_of(runs[0], path), path), *diffs])
    return body


def categories_section(results: Mapping[str, Any], images: Mapping[str, str] | None) -> list[str]:
    """Per-category counts for the baseline."""
    base = results["runs"][0]
    stats = category_stats(base.get("rows") or [])
    if not stats:
        return []
    body = [category_row(c, s) for c, s in stats.items()]
    header = ["Category", "Items", "Answered", "Pick correct", "Declined", "Missed a concept", "Fully right"]
    note = "Pick correct counts a right pick or a right absence of one; fully right also needs the right "
    note += "decline or answer, valid citations and every concept."
    title = f"Per category (baseline `{base['label']}`)"
    return section(title, table(header, body), note, image(images, "categories"))


def category_row(category: str, s: Mapping[str, int]) -> list[Any]:
    """A category's row: items, answered, picks correct, declined, concept misses, fully right."""
    picks, right = f"{s['correct']}/{s['picks']}", f"{s['right']}/{s['items']}"
    return [category, s["items"], s["answered"], picks, s["declined"], s["concepts"], right]


def failures_section(results: Mapping[str, Any]) -> list[str]:
    """The baseline's wrong items (capped), then its skipped, errored and unanswered ones."""
    base = results["runs"][0]
    rows = [r for r in base.get("rows") or [] if not r.get("missing") and row_problems(r)]
    body = [failure_row(r) for r in rows[:FAILURE_CAP]]
    header = ["Item", "Question", "Expected", "Got", "What went wrong"]
    extra = len(rows) - FAILURE_CAP
    more = f"…and {extra} more (see the rows in metrics.json)." if extra > 0 else ""
    wrong = table(header, body) if body else "Every answered item was fully right."
    return section(f"Failures (baseline `{base['label']}`)", wrong, more, *not_answered(base))


def failure_row(row: Mapping[str, Any]) -> list[str]:
    """A wrong item's row: id, question, expected, got, what went wrong."""
    what = "; ".join(row_problems(row))
    return [f"`{row['id']}`", shorten(str(row.get("question", ""))), expected_text(row), got_text(row), what]


def not_answered(run: Mapping[str, Any]) -> list[list[str]]:
    """Bulleted lists of a run's skipped, errored and otherwise unanswered items (empty lists left out)."""
    listed = {e.get("id") for e in [*(run.get("skipped") or []), *(run.get("errors") or [])]}
    missing = [r["id"] for r in run.get("rows") or [] if r.get("missing") and r["id"] not in listed]
    groups = {
        "Skipped": [(e.get("id"), e.get("reason")) for e in run.get("skipped") or []],
        "Errored": [(e.get("id"), e.get("error")) for e in run.get("errors") or []],
        "No answer": [(i, "no answer recorded") for i in missing],
    }
    return [
        [f"**{title}** ({len(entries)}):", "", *(f"- `{i}`: {cell(why)}" for i, why in entries)]
        for title, entries in groups.items()
        if entries
    ]


def shorten(text: str, limit: int = QUESTION_CHARS) -> str:
    """Text cut to about ``limit`` characters at a word boundary."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


# ------------------------------------------------------------------------------------------ public


def render_markdown(results: Mapping[str, Any], images: Mapping[str, str] | None) -> str:
    """The report as Markdown; ``images`` maps plot name to file name, None when matplotlib is missing."""
    sections = [
        summary_section(results, images),
        targets_section(results, images),
        comparison_section(results),
        metrics_section(results, images),
        latency_section(results, images),
        categories_section(results, images),
        failures_section(results),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write report.md and its PNG plots into out_dir; return the report path."""
    if not results.get("runs"):
        raise ValueError("results has no runs to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = write_plots(results, out_dir)
    path = out_dir / "report.md"
    path.write_text(render_markdown(results, images), encoding="utf-8")
    return path
