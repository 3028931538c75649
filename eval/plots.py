"""PNG plots for the evaluation report (``eval/report.py``), and the readers of the results dict both use.

matplotlib is imported lazily, inside :func:`new_figure`, with the Agg backend; callers catch the
``ImportError`` when it is not installed. Figures are built with the object API (no pyplot state), so
nothing leaks between plots or into a caller's own figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.metrics import CLASSES, rec_class

DPI = 110
#: Colours of the runs, in run order (matplotlib's tab10 palette).
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
MET, PARTLY, MISSED, NONE = "#2e8b57", "#e0a030", "#c0392b", "#b0b0b0"
CLASS_NAMES = {"kserve": "kserve", "ray-serve": "ray-serve", "none": "no pick"}
STAGE_ORDER = ("retrieve_ms", "rerank_ms", "first_token_ms", "generate_ms", "total_ms")


# -------------------------------------------------------------------------------------- reading results


def leaf(run: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    """The ``{"value", "n"}`` leaf at a dotted path of a run's metrics (``judge.*`` reads the judge)."""
    if path.startswith("judge."):
        node, keys = run.get("judge") or {}, path.removeprefix("judge.").split(".")
    else:
        node, keys = run.get("metrics") or {}, path.split(".")
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def value_of(run: Mapping[str, Any], path: str) -> float | None:
    """The value at a dotted metric path, or None when it is absent or was not measured."""
    node = leaf(run, path)
    return None if node is None else node.get("value")


def bounds(target: Mapping[str, Any]) -> list[tuple[str, float]]:
    """A target's bounds as ("≥", min) and/or ("≤", max)."""
    return [(sign, float(target[key])) for key, sign in (("min", "≥"), ("max", "≤")) if key in target]


def target_met(value: float | None, target: Mapping[str, Any]) -> bool | None:
    """Whether a value meets every bound of a target; None when the value was not measured."""
    if value is None:
        return None
    return all(value >= b if sign == "≥" else value <= b for sign, b in bounds(target))


def expected_text(row: Mapping[str, Any]) -> str:
    """What the item expected: a decline, a pick, or no pick."""
    return "decline" if row.get("scope") == "out" else CLASS_NAMES.get(str(row.get("platform")), "?")


def got_text(row: Mapping[str, Any]) -> str:
    """What the answer gave: declined, a pick, or no pick."""
    if row.get("missing"):
        return "no answer"
    return "declined" if row.get("declined") else CLASS_NAMES[rec_class(row.get("got"))]


def row_problems(row: Mapping[str, Any]) -> list[str]:
    """What went wrong with one row, in words; empty when the answer was fully right."""
    if row.get("missing"):
        return ["no answer"]
    problems = []
    if row.get("correct") is False:
        gold, got = row.get("platform"), CLASS_NAMES[rec_class(row.get("got"))]
        problems.append(
            f"overclaim: picked {got}" if gold == "none" else f"wrong pick: {got}, expected {gold}"
        )
    if bool(row.get("declined")) != (row.get("scope") == "out"):
        problems.append("declined an in-scope question" if row.get("declined") else "did not decline")
    if row.get("invalid_citations"):
        problems.append("invalid citations: " + ", ".join(row["invalid_citations"]))
    if row.get("concepts_missed"):
        groups = ["[" + " / ".join(map(str, g)) + "]" for g in row["concepts_missed"]]
        problems.append("missed concepts: " + ", ".join(groups))
    return problems


def category_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per category (first-seen order): items, answered, picks judged, correct, declined, concept misses
    and fully right."""
    stats: dict[str, dict[str, int]] = {}
    for row in rows:
        s = stats.setdefault(
            str(row.get("category") or "?"),
            dict.fromkeys(("items", "answered", "picks", "correct", "declined", "concepts", "right"), 0),
        )
        s["items"] += 1
        if row.get("missing"):
            continue
        s["answered"] += 1
        s["picks"] += row.get("correct") is not None
        s["correct"] += row.get("correct") is True
        s["declined"] += bool(row.get("declined"))
        s["concepts"] += bool(row.get("concepts_missed"))
        s["right"] += not row_problems(row)
    return stats


def confusion(rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Counts of gold class (rows) by predicted class (columns) over the answered, labelled rows."""
    counts = [[0] * len(CLASSES) for _ in CLASSES]
    for row in rows:
        if not row.get("missing") and row.get("platform") in CLASSES:
            counts[CLASSES.index(row["platform"])][CLASSES.index(rec_class(row.get("got")))] += 1
    return counts


def stages(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The latency stages of any run, pipeline order first."""
    keys = {k for run in runs for k in (run.get("metrics") or {}).get("latency") or {}}
    return [k for k in STAGE_ORDER if k in keys] + sorted(keys - set(STAGE_ORDER))


def latency(run: Mapping[str, Any], stage: str) -> Mapping[str, Any]:
    """A run's ``{p50, p95, n}`` for a stage (empty when absent)."""
    return ((run.get("metrics") or {}).get("latency") or {}).get(stage) or {}


# ------------------------------------------------------------------------------ plots of a results dict


def write_plots(results: Mapping[str, Any], out_dir: Path) -> dict[str, str] | None:
    """Draw the plots whose data is present into out_dir: {name: file name}; None without matplotlib."""
    drawers = {
        "targets": plot_targets,
        "confusion": plot_confusion,
        "latency": plot_latency,
        "categories": plot_categories,
    }
    images = {}
    try:
        for name, draw in drawers.items():
            if draw(results, out_dir / f"{name}.png"):
                images[name] = f"{name}.png"
    except ImportError:
        return None
    return images


def plot_targets(results: Mapping[str, Any], path: Path) -> bool:
    """targets.png: each target's value per run against its threshold; False when there are no targets."""
    targets, runs = results.get("targets") or {}, results["runs"]
    if not targets:
        return False
    targets_png(
        path,
        [t.get("label", k) for k, t in targets.items()],
        [bounds(t) for t in targets.values()],
        {r["label"]: [value_of(r, k) for k in targets] for r in runs},
        [target_met(value_of(runs[0], k), t) for k, t in targets.items()],
    )
    return True


def plot_confusion(results: Mapping[str, Any], path: Path) -> bool:
    """confusion.png for the baseline; False when no answered row has a gold class."""
    base = results["runs"][0]
    counts = confusion(base.get("rows") or [])
    if not any(map(any, counts)):
        return False
    confusion_png(path, [CLASS_NAMES[c] for c in CLASSES], counts, base["label"])
    return True


def plot_latency(results: Mapping[str, Any], path: Path) -> bool:
    """latency.png: p50 and p95 per stage and run; False when no run reported timings."""
    runs, names = results["runs"], stages(results["runs"])
    if not names:
        return False
    p50 = {r["label"]: [latency(r, s).get("p50") for s in names] for r in runs}
    p95 = {r["label"]: [latency(r, s).get("p95") for s in names] for r in runs}
    latency_png(path, [s.removesuffix("_ms") for s in names], p50, p95)
    return True


def plot_categories(results: Mapping[str, Any], path: Path) -> bool:
    """categories.png: share of items fully right per category in the baseline; False without rows."""
    base = results["runs"][0]
    stats = category_stats(base.get("rows") or [])
    if not stats:
        return False
    categories_png(path, stats, base["label"])
    return True


# ---------------------------------------------------------------------------------------------- drawing


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure of the given size in inches; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Any, path: Path) -> None:
    """Write the figure as a PNG."""
    fig.savefig(path, dpi=DPI, format="png")


def run_colour(index: int) -> str:
    """The colour of the run at this position."""
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def targets_png(
    path: Path,
    labels: Sequence[str],
    bounds: Sequence[Sequence[tuple[str, float]]],
    values: Mapping[str, Sequence[float | None]],
    met: Sequence[bool | None],
) -> None:
    """Horizontal bars of each target metric (percent) per run, the threshold drawn as a black tick.

    ``bounds`` holds the ("≥" or "≤", threshold as a fraction) pairs of each label; ``values`` maps run
    label to one fraction (or None) per target; ``met`` says whether the baseline met each target (colours
    a single run's bars).
    """
    fig = new_figure(9, 1.4 + len(labels) * (0.35 + 0.25 * len(values)))
    ax = fig.add_subplot()
    target_bars(ax, values, met)
    for i, pairs in enumerate(bounds):
        for _, bound in pairs:
            ax.vlines(100 * bound, i - 0.45, i + 0.45, colors="black", linewidth=2.5)
    ticks = [
        label + "\n(target " + " and ".join(f"{sign} {100 * b:g}%" for sign, b in pairs) + ")"
        for label, pairs in zip(labels, bounds, strict=True)
    ]
    ax.set_yticks(range(len(labels)), ticks, fontsize=9)
    ax.plot([], [], color="black", linewidth=2.5, label="target")
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, 113)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("value (%)")
    ax.set_title("Quality targets" + (" (green met, red missed)" if len(values) == 1 else " per run"))
    fig.legend(loc="outside lower center", ncols=len(values) + 1, fontsize=8)
    save(fig, path)


def target_bars(ax: Any, values: Mapping[str, Sequence[float | None]], met: Sequence[bool | None]) -> None:
    """One bar per target and run (grouped), each value written in a column right of 100%."""
    runs = list(values)
    height = 0.8 / len(runs)
    for r, run in enumerate(runs):
        ys = [i + (r - (len(runs) - 1) / 2) * height for i in range(len(values[run]))]
        colours = [MET if m else NONE if m is None else MISSED for m in met] if len(runs) == 1 else None
        xs = [0 if v is None else 100 * v for v in values[run]]
        ax.barh(
            ys,
            xs,
            height=height * 0.9,
            color=colours or run_colour(r),
            label=run if colours is None else "_nolegend_",
        )
        for y, v in zip(ys, values[run], strict=True):
            ax.text(102, y, "n/a" if v is None else f"{100 * v:.1f}%", va="center", fontsize=8)


def confusion_png(path: Path, classes: Sequence[str], counts: Sequence[Sequence[int]], run: str) -> None:
    """The recommendation confusion matrix: gold class rows, predicted class columns, counts annotated."""
    fig = new_figure(5.2, 4.4)
    ax = fig.add_subplot()
    top = max(max(r) for r in counts) or 1
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=top)
    for i, line in enumerate(counts):
        for j, n in enumerate(line):
            ax.text(
                j, i, str(n), ha="center", va="center", fontsize=13, color="white" if n > top / 2 else "black"
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted (answer's recommendation)")
    ax.set_ylabel("gold (expected)")
    ax.set_title(f"Recommendation confusion ({run})")
    save(fig, path)


def latency_png(
    path: Path,
    stages: Sequence[str],
    p50: Mapping[str, Sequence[float | None]],
    p95: Mapping[str, Sequence[float | None]],
) -> None:
    """Per-stage p50 latency bars per run (horizontal, ms), with a whisker up to p95."""
    runs = list(p50)
    height = 0.8 / len(runs)
    fig = new_figure(9, 1.4 + len(stages) * (0.3 + 0.25 * len(runs)))
    ax = fig.add_subplot()
    for r, run in enumerate(runs):
        ys = [i + (r - (len(runs) - 1) / 2) * height for i in range(len(stages))]
        mid = [v or 0 for v in p50[run]]
        err = [max((hi or 0) - (lo or 0), 0) for lo, hi in zip(p50[run], p95[run], strict=True)]
        ax.barh(
            ys,
            mid,
            height=height * 0.9,
            xerr=[[0] * len(mid), err],
            capsize=3,
            color=run_colour(r),
            label=run,
        )
    values = [v for run in runs for v in [*p50[run], *p95[run]] if v]
    if values and max(values) / max(min(values), 1e-3) > 30:
        ax.set_xscale("log")
    ax.set_yticks(range(len(stages)), stages)
    ax.set_ylim(len(stages) - 0.5, -0.5)
    ax.set_xlabel("milliseconds" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_title("Latency per stage: bar = p50, whisker = p95")
    fig.legend(loc="outside lower center", ncols=len(runs), fontsize=8)
    save(fig, path)


def categories_png(path: Path, stats: Mapping[str, Mapping[str, int]], run: str) -> None:
    """Per-category share of items answered fully right (from :func:`category_stats`), counts annotated."""
    fig = new_figure(8, 1.3 + 0.38 * len(stats))
    ax = fig.add_subplot()
    shares = [100 * s["right"] / s["items"] if s["items"] else 0 for s in stats.values()]
    colours = [MET if share >= 90 else PARTLY if share >= 60 else MISSED for share in shares]
    ax.barh(range(len(stats)), shares, color=colours)
    for i, (s, share) in enumerate(zip(stats.values(), shares, strict=True)):
        unanswered = s["items"] - s["answered"]
        note = f"{s['right']}/{s['items']}" + (f" ({unanswered} not answered)" if unanswered else "")
        ax.text(share + 1, i, note, va="center", fontsize=8)
    ax.set_yticks(range(len(stats)), list(stats))
    ax.set_ylim(len(stats) - 0.5, -0.5)
    ax.set_xlim(0, 115)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("items fully right (%): green ≥ 90, amber ≥ 60, red below")
    ax.set_title(f"Items fully right per category ({run})")
    save(fig, path)
