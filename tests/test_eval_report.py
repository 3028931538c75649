"""The evaluation report (eval/report.py, eval/plots.py) over real eval.metrics output for a few dev items."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from eval.metrics import rows, score
from eval.plots import row_problems
from eval.report import FAILURE_CAP, MATPLOTLIB_HINT, render_markdown, write_report
from eval.runner import TARGETS

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "eval" / "datasets" / "dev.yaml"
IDS = (
    "rec-kserve-001",
    "rec-kserve-002",
    "rec-ray-001",
    "tradeoff-001",
    "fact-001",
    "manifest-001",
    "oos-001",
    "follow-001",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MANIFEST = "InferenceService/fraud-detector (namespace risk)\ncanary: 10 at spec.predictor.canaryTraffic"


@pytest.fixture(scope="module")
def items() -> list[dict]:
    by_id = {i["id"]: i for i in yaml.safe_load(DEV.read_text())["items"]}
    return [by_id[i] for i in IDS]


def answer(text: str, rec: str | None = None, declined: bool = False, cite=(), timed: bool = True) -> dict:
    """An Answer-contract dict; each citation (id, text) is also a retrieved passage with that text,
    unless its text starts with "!" (then the passage says something else and the citation is invalid)."""
    citations = [{"id": i, "title": i, "source": "s", "locator": i, "text": t.lstrip("!")} for i, t in cite]
    retrieved = [{"id": i, "text": "other text" if t.startswith("!") else t} for i, t in cite]
    timings = {"retrieve_ms": 18.0, "generate_ms": 2400.0, "total_ms": 2450.0} if timed else {}
    return {
        "answer": text,
        "recommendation": rec,
        "declined": declined,
        "citations": citations,
        "retrieved": retrieved,
        "timings": timings,
        "model": "fake",
    }


def answers(fixed_pick: bool = False, timed: bool = True) -> dict[str, dict]:
    """Answers to IDS: rec-kserve-002 picks ray-serve (unless fixed_pick) and misses its concepts,
    manifest-001 has an invalid citation, follow-001 is left unanswered."""
    return {
        "rec-kserve-001": answer(
            "One InferenceService per team.", "kserve", cite=[("usecase/standard-endpoint-lifecycle", "t")]
        ),
        "rec-kserve-002": answer("Use it.", "kserve" if fixed_pick else "ray-serve", timed=timed),
        "rec-ray-001": answer("Ray is already there: reuse it.", "ray-serve", timed=timed),
        "tradeoff-001": answer("InferenceService CRD versus Python code.", timed=timed),
        "fact-001": answer("Set canaryTrafficPercent to 10.", timed=timed),
        "manifest-001": answer(
            "canaryTrafficPercent is 10%, v14 serves the rest, v15 is new.",
            cite=[("InferenceService/fraud-detector", "!" + MANIFEST)],
            timed=timed,
        ),
        "oos-001": answer("I can only help with KServe and Ray Serve.", declined=True, timed=timed),
    }


def run(items: list[dict], by_id: dict[str, dict], label: str = "base", **extra) -> dict:
    """One run of the results dict, from real score() and rows() output."""
    table = rows(items, by_id)
    by_item = {i["id"]: i for i in items}
    for row in table:
        row["category"] = row["id"].rsplit("-", 1)[0]
        row["question"] = by_item[row["id"]]["question"]
    return {
        "label": label,
        "description": "settings as configured",
        "overrides": {},
        "model": "SmolLM2-135M-Instruct",
        "seconds": 321.5,
        "skipped": [{"id": "follow-001", "reason": "items with a corpus need an in-process run"}],
        "errors": [],
        "metrics": score(items, by_id),
        "judge": None,
        "rows": table,
        **extra,
    }


def results(items: list[dict], runs: list[dict]) -> dict:
    return {
        "dataset": "eval/datasets/dev.yaml",
        "items": len(items),
        "mode": "in-process",
        "endpoint": None,
        "created": "2026-11-29T12:34:56Z",
        "targets": TARGETS,
        "runs": runs,
    }


def target_row(report: str, label: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {label} |"))


def images(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def assert_pngs(out: Path, report: str, expected: set[str]) -> None:
    assert set(images(report)) == expected
    for name in expected:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert 5_000 < len(data) < 200_000, (name, len(data))


@pytest.fixture(scope="module")
def single(items, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("single")
    path = write_report(results(items, [run(items, answers())]), out)
    return out, path.read_text()


@pytest.fixture(scope="module")
def three(items, tmp_path_factory) -> tuple[Path, str]:
    runs = [
        run(items, answers()),
        run(items, answers(), "k8", description="retrieve 8 passages", overrides={"retrieval": {"k": 8}}),
        run(items, answers(fixed_pick=True), "t0", description="temperature 0", seconds=250.0),
    ]
    out = tmp_path_factory.mktemp("three")
    return out, write_report(results(items, runs), out).read_text()


# ------------------------------------------------------------------------------------------ one run


def test_single_run_report_has_summary_targets_and_plots(single):
    out, report = single
    assert (out / "report.md").is_file()
    assert report.startswith("# ServeWise evaluation report")
    assert "**8 items**" in report and "SmolLM2-135M-Instruct" in report and "2026-11-29 12:34 UTC" in report
    assert "5 min 21.5 s" in report and "1 skipped and 0 errored" in report
    assert "`base` met 3 of 6 targets" in report
    assert "66.7% ❌" in target_row(report, "Recommendation accuracy (items with a pick)")
    assert "≥ 95%" in target_row(report, "Recommendation accuracy (items with a pick)")
    assert "100.0% ✅" in target_row(report, "No overclaim (items without a pick)")
    assert "50.0% ❌" in target_row(report, "Citation validity")
    assert "0.0% ✅" in target_row(report, "False declines (in scope)")
    assert "≤ 3%" in target_row(report, "False declines (in scope)")
    assert "## Comparison" not in report
    assert MATPLOTLIB_HINT not in report
    assert_pngs(out, report, {"targets.png", "confusion.png", "latency.png", "categories.png"})


def test_single_run_tables_define_metrics_and_latency(single):
    _, report = single
    assert "| Retrieval hit@k | " in report and "gold criterion or manifest object" in report
    assert "| Recommendation macro-F1 | 0." in report and "(n=7)" in report
    assert "| retrieve | 18 / 18 (n=7) |" in report
    assert "| generate | 2,400 / 2,400 (n=7) |" in report
    assert "| rec-kserve | 2 | 2 | 1/2 | 0 | 1 | 1/2 |" in report


def test_failures_name_wrong_items_and_skipped_ones(single):
    _, report = single
    failures = report.split("## Failures", 1)[1]
    wrong = next(line for line in failures.splitlines() if "`rec-kserve-002`" in line)
    assert "| kserve | ray-serve |" in wrong and "wrong pick: ray-serve, expected kserve" in wrong
    assert "missed concepts: [Argo CD / GitOps / Git], [Kyverno / admission / policy]" in wrong
    assert "I work at a bank." in wrong and " …" in wrong  # the question is cut near 100 characters
    assert "invalid citations: InferenceService/fraud-detector" in failures
    assert "`rec-kserve-001`" not in failures and "`oos-001`" not in failures
    assert "**Skipped** (1):" in failures and "- `follow-001`: items with a corpus need" in failures


# ---------------------------------------------------------------------------------------- three runs


def test_three_runs_compare_against_the_baseline(three):
    out, report = three
    assert "It compares 3 runs (baseline `base`)" in report
    assert "| Metric | Target | base | k8 | t0 |" in report
    assert target_row(report, "Recommendation accuracy (items with a pick)").endswith(
        "| 66.7% ❌ | 66.7% ❌ | 100.0% ✅ |"
    )
    comparison = report.split("## Comparison", 1)[1].split("\n## ", 1)[0]
    assert "| `k8` | retrieve 8 passages | retrieval.k=8 |" in comparison
    assert "| `t0` | temperature 0 | – | SmolLM2-135M-Instruct | 4 min 10.0 s |" in comparison
    accuracy = target_row(comparison, "Recommendation accuracy (items with a pick)")
    assert accuracy.endswith("| 66.7% | +0.0 pts | +33.3 pts (better) |")
    assert "| All metrics" not in comparison and "| Retrieval hit@k |" in comparison
    assert_pngs(out, report, {"targets.png", "confusion.png", "latency.png", "categories.png"})


# ------------------------------------------------------------------------------------- graceful edges


def test_empty_latency_and_unmeasured_targets(items, tmp_path):
    no_oos = [i for i in items if i["scope"] != "out"]
    by_id = {k: {**a, "timings": {}} for k, a in answers().items()}
    report = write_report(results(no_oos, [run(no_oos, by_id)]), tmp_path).read_text()
    assert "n/a (no items)" in target_row(report, "Out-of-scope declined")
    assert "| Decline rate (out of scope) | n/a (n=0) |" in report
    assert "1 not measured" in report
    assert "No timings were reported" in report and not (tmp_path / "latency.png").exists()
    assert_pngs(tmp_path, report, {"targets.png", "confusion.png", "categories.png"})


def test_report_without_matplotlib(items, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    report = write_report(results(items, [run(items, answers())]), tmp_path).read_text()
    assert report.count(MATPLOTLIB_HINT) == 1
    assert not images(report) and not list(tmp_path.glob("*.png"))
    assert "## Targets" in report and "## Failures" in report


def test_failure_list_is_capped_and_judge_metrics_shown(items):
    base = run(items, answers(), judge={"faithfulness": {"value": 0.8, "n": 5}})
    wrong = {**base["rows"][1], "question": "q"}
    base["rows"] = [{**wrong, "id": f"w-{n}"} for n in range(FAILURE_CAP + 5)]
    report = render_markdown(results(items, [base]), {})
    assert "`w-39`" in report and "`w-40`" not in report and "…and 5 more" in report
    assert "| Judge faithfulness | 80.0% (n=5) |" in report
    assert MATPLOTLIB_HINT not in report and not images(report)


def test_row_problems_in_words():
    oos = {"id": "o", "platform": "none", "scope": "out", "missing": False, "got": "kserve", "correct": False}
    assert row_problems({**oos, "declined": False}) == ["overclaim: picked kserve", "did not decline"]
    ok = {**oos, "got": None, "correct": True, "declined": True, "invalid_citations": None}
    assert row_problems(ok) == []
    assert row_problems({"id": "m", "missing": True}) == ["no answer"]


def test_no_runs_is_an_error_and_matplotlib_is_imported_only_inside_functions(items, tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        write_report(results(items, []), tmp_path)
    for name in ("report.py", "plots.py"):
        tree = ast.parse((ROOT / "eval" / name).read_text(encoding="utf-8"))
        top = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not [line for line in top if "matplotlib" in line], name
