"""``servewise eval``: answer every dataset item, score the answers, write the results and a report.

One run per settings variant (the base settings, then each ``--compare`` variant) over the same
items, in this process or against a running server. Output directory::

    answers.jsonl          one Answer JSON per item of the base run, with its ``id`` and ``retrieved``
    runs/<label>/answers.jsonl   the same for each compared variant
    metrics.json           every run's metrics, per-item rows, targets, skipped and failed items
    config.json            the settings used (secrets masked) and each variant's overrides
    report.md + *.png      tables and plots (:mod:`eval.report`)
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from assistant.config import Settings
from assistant.errors import InputError
from eval import metrics as m
from eval.answerers import Answerer, HttpAnswerer, InProcessAnswerer, Outcome
from eval.dataset import EvalItem
from eval.judge import Judge, summarize
from eval.plots import target_met, value_of

#: The quality targets (issue 5); ``min`` / ``max`` bound a dotted path into a run's metrics.
TARGETS: dict[str, dict[str, Any]] = {
    "recommendation.accuracy": {"min": 0.95, "label": "Recommendation accuracy (items with a pick)"},
    "recommendation.no_overclaim": {"min": 0.90, "label": "No overclaim (items without a pick)"},
    "citations.validity": {"min": 1.0, "label": "Citation validity"},
    "concepts.coverage": {"min": 0.90, "label": "Concept coverage"},
    "scope.decline_rate": {"min": 0.95, "label": "Out-of-scope declined"},
    "scope.false_decline_rate": {"max": 0.03, "label": "False declines (in scope)"},
}


@dataclass
class Variant:
    """A settings variant to compare: a label and the settings it overrides."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = "settings as configured"


def parse_variant(spec: str) -> Variant:
    """``--compare`` value: a YAML settings file, or inline ``key.path=value[,key.path=value]``."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise InputError(f"--compare {spec}: no such settings file")
        overrides = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(overrides, dict):
            raise InputError(f"--compare {spec}: the file must hold a mapping of settings")
        return Variant(path.stem, overrides, describe(overrides))
    overrides: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--compare {spec!r}: expected KEY=VALUE pairs or a .yaml file")
        node = overrides
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return Variant(spec, overrides, describe(overrides))


def describe(overrides: dict[str, Any], prefix: str = "") -> str:
    """``{"reranker": {"kind": "none"}}`` -> ``reranker.kind=none``."""
    parts = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            parts.append(describe(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}={value}")
    return ", ".join(parts) or "settings as configured"


def slug(label: str) -> str:
    """A label as a directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


class Evaluation:
    """Runs variants over items and collects the results dict that :mod:`eval.report` renders."""

    def __init__(
        self,
        items: Sequence[EvalItem],
        settings_for: Callable[[dict[str, Any]], Settings],
        dataset: Path,
        endpoint: str | None = None,
        progress: bool = True,
        embedder: Any = None,
    ) -> None:
        self.items = list(items)
        self.settings_for = settings_for
        self.dataset = dataset
        self.endpoint = endpoint
        self.progress = progress
        self._embedder = embedder
        self._generators: dict[str, Any] = {}

    async def run(self, variants: Sequence[Variant], out_dir: Path | None = None) -> dict[str, Any]:
        """Every variant in turn; writes answers as each run ends when ``out_dir`` is given."""
        if self.endpoint and len(variants) > 1:
            raise InputError("--compare changes settings in this process; it cannot be used with --endpoint")
        results = self._header()
        try:
            for n, variant in enumerate(variants):
                run, outcomes = await self._run_variant(variant)
                results["runs"].append(run)
                if out_dir is not None:
                    target = out_dir if n == 0 else out_dir / "runs" / slug(variant.label)
                    write_answers(target / "answers.jsonl", outcomes)
        finally:
            await self._close_generators()
        return results

    def _header(self) -> dict[str, Any]:
        return {
            "dataset": str(self.dataset),
            "items": len(self.items),
            "mode": "http" if self.endpoint else "in-process",
            "endpoint": self.endpoint,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "targets": TARGETS,
            "runs": [],
        }

    async def _run_variant(self, variant: Variant) -> tuple[dict[str, Any], list[Outcome]]:
        settings = self.settings_for(variant.overrides)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="servewise-eval-") as scratch:
            answerer = await self._answerer(settings, Path(scratch))
            try:
                outcomes = await answer_all(
                    self.items, answerer, settings.eval.concurrency, variant.label, self.progress
                )
            finally:
                await answerer.close()
        judged = await judge_all(Judge.from_config(settings.eval.judge), self.items, outcomes, self.progress)
        run = summarize_run(variant, self.items, outcomes, time.perf_counter() - started)
        run["judge"] = judged
        return run, outcomes

    async def _answerer(self, settings: Settings, scratch: Path) -> Answerer:
        if self.endpoint:
            token = settings.eval.endpoint_token
            answerer = HttpAnswerer(
                self.endpoint, token.get_secret_value() if token else None, settings.eval.http_timeout_s
            )
            await answerer.check()
            return answerer
        generator = await self._generator(settings)
        return InProcessAnswerer(
            settings, generator, self._embedder_for(settings), scratch, self.dataset.parent
        )

    def _embedder_for(self, settings: Settings) -> Any:
        if self._embedder is None:
            from assistant.embedder import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder.from_config(settings.embedder)
        return self._embedder

    async def _generator(self, settings: Settings) -> Any:
        """One started generator per distinct generator settings, shared by the variants."""
        key = settings.generator.model_dump_json()
        if key not in self._generators:
            from assistant.generator import build_generator

            generator = build_generator(settings)
            await generator.start()
            self._generators[key] = generator
        return self._generators[key]

    async def _close_generators(self) -> None:
        for generator in self._generators.values():
            await generator.close()
        self._generators.clear()


async def answer_all(
    items: Sequence[EvalItem], answerer: Answerer, concurrency: int, label: str, progress: bool
) -> list[Outcome]:
    """Every item through ``answerer``, ``concurrency`` at a time, in item order, with a progress bar."""
    from tqdm import tqdm

    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=f"eval {label}", unit="q", file=sys.stderr, disable=not progress)

    async def one(item: EvalItem) -> Outcome:
        async with gate:
            outcome = await answerer(item)
        bar.update()
        return outcome

    try:
        return list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        bar.close()


async def judge_all(
    judge: Judge | None, items: Sequence[EvalItem], outcomes: Sequence[Outcome], progress: bool
) -> dict[str, Any] | None:
    """Judge metrics over the answered, not declined items; None without a judge."""
    if judge is None:
        return None
    by_id = {item.id: item for item in items}
    todo = [o for o in outcomes if o.answer and not o.answer.get("declined")]
    from tqdm import tqdm

    scores = []
    try:
        for outcome in tqdm(todo, desc="judge", unit="q", file=sys.stderr, disable=not progress):
            answer = outcome.answer or {}
            scores.append(await judge(by_id[outcome.id].question, answer["answer"], outcome.retrieved or []))
    finally:
        await judge.close()
    return summarize(scores)


def summarize_run(
    variant: Variant, items: Sequence[EvalItem], outcomes: Sequence[Outcome], seconds: float
) -> dict:
    """Metrics and rows of one run: skipped items are left out of every metric, failed ones are missing."""
    skipped = {o.id: o.skipped for o in outcomes if o.skipped}
    scored = [item for item in items if item.id not in skipped]
    gold = [item.gold() for item in scored]
    answers = {o.id: o.answer for o in outcomes if o.answer is not None}
    retrieved = {o.id: o.retrieved for o in outcomes if o.answer is not None and o.retrieved is not None}
    rows = m.rows(gold, answers, retrieved)
    for row, item in zip(rows, scored, strict=True):
        row.update(category=item.category, question=item.question)
    models = [str(a.get("model", "")).removesuffix(" (composed)") for a in answers.values()]
    return {
        "label": variant.label,
        "description": variant.description,
        "overrides": variant.overrides,
        "model": max(set(models), key=models.count) if models else "",
        "seconds": round(seconds, 1),
        "skipped": [{"id": i, "reason": r} for i, r in skipped.items()],
        "errors": [{"id": o.id, "error": o.error} for o in outcomes if o.error],
        "metrics": {**m.score(gold, answers, retrieved), "generation": generation_stats(outcomes)},
        "rows": rows,
    }


def generation_stats(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """How often the model's own text was shown, and why it was replaced otherwise.

    An answer whose model name ends in ``(composed)`` was replaced; the reason is known in-process
    (the pipeline's ``replaced`` event) and ``unknown`` over HTTP.
    """
    written = [o for o in outcomes if o.answer is not None and not o.answer.get("declined")]
    replaced = [o for o in written if str(o.answer.get("model", "")).endswith("(composed)")]
    reasons = Counter(o.replaced or "unknown" for o in replaced)
    kept = m.metric(0.0 if o in replaced else 1.0 for o in written)
    return {"model_kept": kept, "replaced": dict(reasons.most_common())}


def target_results(run: dict[str, Any]) -> dict[str, bool | None]:
    """Each target met (True), missed (False) or not measurable (None) in a run."""
    return {path: target_met(value_of(run, path), bound) for path, bound in TARGETS.items()}


def write_answers(path: Path, outcomes: Sequence[Outcome]) -> None:
    """``answers.jsonl``: one line per answered item, ``{"id", ...Answer, "retrieved"}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for o in outcomes:
            if o.answer is not None:
                line = {"id": o.id, **o.answer, "retrieved": o.retrieved}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON, written whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
