"""``servewise eval``: registered on the ``servewise`` command group by the console entry point.

servewise eval --dataset eval/datasets/dev.yaml                       # in-process, report in eval-out/
servewise eval --dataset dev.yaml --endpoint http://localhost:8000    # score the running graph
servewise eval --dataset dev.yaml --compare reranker.kind=none --compare generator.kind=extractive
"""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from assistant.cli import Context, pass_ctx
from assistant.config import Settings, deep_merge


@click.command("eval")
@click.option(
    "--dataset",
    "dataset_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Items in YAML (a list or {items: [...]}) or JSONL; only id and question are required.",
)
@click.option(
    "--endpoint", default=None, help="Score a running ServeWise (http://HOST:PORT) instead of this process."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory (default: eval-out/<dataset>-<time>).",
)
@click.option(
    "--compare",
    "compare",
    multiple=True,
    metavar="CONFIG",
    help="Also run with these settings: a YAML settings file or key.path=value[,...]; repeatable.",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=None, help="Questions in flight (default 8)."
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N items.")
@click.option("--only", "only", default=None, metavar="REGEX", help="Only items whose id matches.")
@click.option("--check", is_flag=True, help="Exit 1 when the base run misses a target.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@pass_ctx
def eval_command(
    ctx: Context,
    dataset_path: str,
    endpoint: str | None,
    out_dir: str | None,
    compare: tuple[str, ...],
    concurrency: int | None,
    limit: int | None,
    only: str | None,
    check: bool,
    no_progress: bool,
) -> None:
    """Score answer quality over a dataset and write answers, metrics and a report."""
    from eval.dataset import load_dataset
    from eval.runner import Evaluation, Variant, parse_variant, target_results

    items = select(load_dataset(dataset_path), only, limit)
    variants = [Variant("base"), *(parse_variant(spec) for spec in compare)]
    flags: dict[str, Any] = {"eval": {"concurrency": concurrency}} if concurrency else {}
    settings_for = lambda overrides: ctx.with_flags(deep_merge(flags, overrides))  # noqa: E731
    out = Path(out_dir or default_out(dataset_path))
    evaluation = Evaluation(items, settings_for, Path(dataset_path), endpoint, progress=not no_progress)
    results = asyncio.run(evaluation.run(variants, out))
    report = write_outputs(out, results, settings_for({}), variants, endpoint)
    click.echo(summary(results, report))
    if check and not all(v is not False for v in target_results(results["runs"][0]).values()):
        sys.exit(1)


def select(items: list, only: str | None, limit: int | None) -> list:
    """Items whose id matches ``only`` (a regex), then the first ``limit``."""
    if only:
        try:
            pattern = re.compile(only)
        except re.error as exc:
            raise click.BadParameter(f"not a regular expression: {exc}", param_hint="--only") from exc
        items = [i for i in items if pattern.search(i.id)]
    if not items:
        raise click.BadParameter("no item id matches", param_hint="--only")
    return items[:limit] if limit else items


def default_out(dataset_path: str) -> str:
    return f"eval-out/{Path(dataset_path).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def write_outputs(out: Path, results: dict, settings: Settings, variants: list, endpoint: str | None) -> Path:
    """metrics.json, config.json and the report; returns the report's path."""
    from eval.report import write_report
    from eval.runner import write_json

    write_json(out / "metrics.json", results)
    write_json(
        out / "config.json",
        {
            "dataset": results["dataset"],
            "endpoint": endpoint,
            "settings": None if endpoint else settings.model_dump(mode="json"),
            "note": "the server's own settings apply (not visible over HTTP)" if endpoint else None,
            "variants": [{"label": v.label, "overrides": v.overrides} for v in variants],
        },
    )
    return write_report(results, out)


def summary(results: dict, report: Path) -> str:
    """The terminal summary: each run's targets, then where the report is."""
    from eval.plots import value_of
    from eval.runner import TARGETS, target_results

    lines = []
    for run in results["runs"]:
        met = target_results(run)
        lines.append(
            f"{run['label']}: {sum(v is True for v in met.values())}/{len(met)} targets met"
            f" ({len(run['errors'])} errors, {len(run['skipped'])} skipped, {run['seconds']:.0f} s)"
        )
        for path, ok in met.items():
            value = value_of(run, path)
            shown = "n/a" if value is None else f"{value:.1%}"
            lines.append(
                f"  {'ok  ' if ok else 'MISS' if ok is False else 'n/a '} {TARGETS[path]['label']}: {shown}"
            )
    lines.append(f"report: {report}")
    return "\n".join(lines)
