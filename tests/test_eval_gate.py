"""The CI quality gate: every fifth item of the dev set (24 items, a systematic sample, not picked to
pass), answered by the real pipeline in-process (real Chroma and MiniLM, vLLM's CPU engine with the
packaged SmolLM2) and scored by the harness. It fails when a metric drops below the floor set from
measured runs of this very sample (see GATE); the full dev set is `servewise eval` (README)."""

from __future__ import annotations

import asyncio
import json

import pytest

from assistant.config import deep_merge, load_settings
from assistant.models import ensure_packaged_generator
from eval.dataset import load_dataset
from eval.runner import Evaluation, Variant
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DEV = ROOT / "eval/datasets/dev.yaml"

#: Floors, from measured runs of this sample (values in the comments; README "Answer quality").
GATE = {
    "recommendation.accuracy": 0.80,  # measured 0.90 (9/10; rec-ray-012 is borderline); full set 0.96-0.98
    "recommendation.no_overclaim": 0.90,  # measured 1.00 (14/14)
    "citations.validity": 1.0,  # measured 1.00 (63 citations); a citation not retrieved is never acceptable
    "concepts.coverage": 0.85,  # measured 0.96 (n=21); full set 0.91
    "scope.decline_rate": 1.0,  # measured 1.00 (3/3)
    "retrieval.hit": 0.85,  # measured 0.89 (16/18); full set 0.95
}
CEILINGS = {"scope.false_decline_rate": 0.05}  # measured 0.00 (0/21)


def value(metrics: dict, path: str) -> float | None:
    node = metrics
    for part in path.split("."):
        node = node[part]
    return node["value"]


@pytest.fixture(scope="module")
def gate_run(corpus_index, embedder, tmp_path_factory):
    items = load_dataset(DEV)[::5]
    model = str(ensure_packaged_generator(corpus_index.data_dir))
    base = corpus_index.model_dump(mode="json")

    def settings_for(overrides: dict):
        values = deep_merge(base, {"generator": {"model": model}, **overrides})
        return load_settings(overrides=values, environ={})

    evaluation = Evaluation(items, settings_for, DEV, progress=False, embedder=embedder)
    out = tmp_path_factory.mktemp("gate")
    results = asyncio.run(evaluation.run([Variant("gate")], out))
    (out / "metrics.json").write_text(json.dumps(results, default=str))
    return results["runs"][0]


def test_the_sample_covers_every_kind_of_item(gate_run):
    categories = {row["category"] for row in gate_run["rows"]}
    assert {"rec-kserve", "rec-ray", "tradeoff", "fact", "manifest", "follow", "oos"} <= categories
    assert gate_run["errors"] == []


@pytest.mark.parametrize("path", sorted(GATE))
def test_quality_floor(gate_run, path):
    got = value(gate_run["metrics"], path)
    assert got is not None and got >= GATE[path], f"{path} = {got} (floor {GATE[path]})"


@pytest.mark.parametrize("path", sorted(CEILINGS))
def test_quality_ceiling(gate_run, path):
    got = value(gate_run["metrics"], path)
    assert got is not None and got <= CEILINGS[path], f"{path} = {got} (ceiling {CEILINGS[path]})"


def test_answers_come_from_the_model(gate_run):
    assert gate_run["model"] == "SmolLM2-135M-Instruct"
    assert gate_run["metrics"]["latency"]["generate_ms"]["n"] > 0
