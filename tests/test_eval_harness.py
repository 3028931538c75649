"""The evaluation harness: datasets, variants, the judge's parsing, and `servewise eval` end to end
in-process (real Chroma, real MiniLM; the extractive generator, so no model is needed here; the real
vLLM model runs in tests/test_eval_gate.py and over HTTP in tests/test_serve_e2e.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from assistant.errors import InputError
from eval.dataset import load_dataset
from eval.judge import Judge, faithfulness_score, parse_object, relevance_score, summarize
from eval.runner import TARGETS, parse_variant, target_results
from serve.cli import cli
from tests.conftest import ROOT


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


EXTRACTIVE = {"SERVEWISE_GENERATOR__KIND": "extractive"}


def run_eval(dataset: Path, *flags: str, data_dir: Path | None = None, env: dict | None = None):
    """``servewise [--data-dir D] eval --dataset FILE --no-progress FLAGS...`` through click."""
    head = ["--data-dir", str(data_dir)] if data_dir else []
    args = [*head, "eval", "--dataset", str(dataset), "--no-progress", *flags]
    return CliRunner().invoke(cli, args, env=env)


# -- datasets -----------------------------------------------------------------------------------
def test_dev_set_loads_with_every_label(tmp_path):
    items = load_dataset(ROOT / "eval/datasets/dev.yaml")
    assert len(items) >= 100
    assert sum(i.scope == "out" for i in items) >= 12
    assert {i.platform for i in items} == {"kserve", "ray-serve", "none"}
    assert any(i.corpus for i in items) and any(i.history for i in items)
    assert items[0].category == "rec-kserve"


def test_minimal_items_in_yaml_list_and_jsonl(tmp_path):
    bare = load_dataset(write(tmp_path / "a.yaml", "- {id: 1, question: 'Why KServe?'}\n"))
    assert bare[0].id == "1" and bare[0].gold() == {
        "id": "1",
        "question": "Why KServe?",
        "history": [],
        "scope": "in",
    }
    lines = '{"id": "a", "question": "q1"}\n\n{"id": "b", "question": "q2", "feedback": {"rating": "up"}}\n'
    jsonl = load_dataset(write(tmp_path / "a.jsonl", lines))
    assert [i.id for i in jsonl] == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.yaml", "items:\n  - {id: x}\n", "item 1 (x): question: Field required"),
        ("a.yaml", "items:\n  - {id: x, question: q, platform: openshift}\n", "platform"),
        ("a.yaml", "items: {id: x}\n", "expected a list of items"),
        ("a.yaml", "items: [\n", "not valid YAML (line 2)"),
        ("a.yaml", "- {id: x, question: q}\n- {id: x, question: r}\n", "duplicate item id 'x'"),
        ("a.yaml", "items: []\n", "has no items"),
        ("a.jsonl", '{"id": "a", "question": "q"}\n{"id": \n', "a.jsonl:2: not valid JSON"),
        ("a.jsonl", '["a"]\n', "a.jsonl:1: expected a mapping"),
    ],
)
def test_bad_datasets_name_the_problem(tmp_path, name, text, message):
    with pytest.raises(InputError, match=None) as exc:
        load_dataset(write(tmp_path / name, text))
    assert message in str(exc.value)


def test_missing_dataset_is_a_one_line_cli_error(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--dataset", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0 and "nope.yaml: no such dataset file" in str(result.exception)


# -- variants, targets, judge ---------------------------------------------------------------------
def test_variants_inline_and_from_a_file(tmp_path):
    inline = parse_variant("reranker.kind=none,retrieval.top_k=8")
    assert inline.overrides == {"reranker": {"kind": "none"}, "retrieval": {"top_k": 8}}
    assert inline.description == "reranker.kind=none, retrieval.top_k=8"
    path = write(tmp_path / "dense.yaml", "retrieval: {mode: dense}\n")
    assert parse_variant(str(path)).label == "dense"
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        parse_variant("dense-only")
    with pytest.raises(InputError, match="no such settings file"):
        parse_variant(str(tmp_path / "missing.yaml"))


def test_targets_met_missed_and_unmeasured():
    metrics = {
        "recommendation": {"accuracy": {"value": 0.96}, "no_overclaim": {"value": 0.5}},
        "citations": {"validity": {"value": 1.0}},
        "concepts": {"coverage": {"value": None}},
        "scope": {"decline_rate": {"value": 1.0}, "false_decline_rate": {"value": 0.04}},
    }
    met = target_results({"metrics": metrics})
    assert set(met) == set(TARGETS)
    assert met["recommendation.accuracy"] and met["citations.validity"] and met["scope.decline_rate"]
    assert met["recommendation.no_overclaim"] is False and met["scope.false_decline_rate"] is False
    assert met["concepts.coverage"] is None


def test_judge_replies_are_parsed_defensively():
    assert parse_object('Sure! ```json\n{"rating": 4}\n```') == {"rating": 4}
    assert parse_object("no json here") is None and parse_object("{broken") is None
    assert faithfulness_score({"claims": [{"supported": True}, {"supported": False}, {"x": 1}]}) == 0.5
    assert faithfulness_score({"claims": []}) is None and faithfulness_score(None) is None
    assert relevance_score({"rating": 5}) == 1.0 and relevance_score({"rating": 1}) == 0.0
    assert relevance_score({"rating": 9}) is None and relevance_score({"rating": True}) is None
    summary = summarize([{"faithfulness": 1.0, "relevance": None}, {"faithfulness": 0.5, "relevance": 0.75}])
    assert summary["faithfulness"] == {"value": 0.75, "n": 2, "unparsed": 0}
    assert summary["relevance"] == {"value": 0.75, "n": 1, "unparsed": 1}


class Replies:
    """A judge model at the generator seam: replies in turn."""

    name = "judge"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)

    async def stream(self, messages, params):
        yield self.replies.pop(0)

    async def close(self) -> None:
        return None


def test_judge_scores_an_answer_from_its_passages():
    judge = Judge(Replies('{"claims": [{"claim": "a", "supported": true}]}', '{"rating": 3}'))
    scores = asyncio.run(judge("Which?", "KServe [1].", [{"text": "KServe has revisions."}]))
    assert scores == {"faithfulness": 1.0, "relevance": 0.5}


def test_no_judge_without_a_base_url():
    from assistant.config import JudgeSettings

    assert Judge.from_config(JudgeSettings()) is None


# -- servewise eval, in-process ---------------------------------------------------------------------
DATASET = """\
items:
  - {id: only-question, question: "We already run Ray everywhere; what should serve our models?"}
  - id: rec-ray-1
    question: We run all our pipelines on Ray already; which serving platform should we use?
    platform: ray-serve
    criteria: [fit/ray-serve-existing-ray]
    concepts: [[Ray]]
  - {id: oos-1, question: "What is the capital of France?", platform: none, scope: out}
"""


@pytest.fixture(scope="module")
def eval_run(corpus_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    dataset = write(out.parent / "mini.yaml", DATASET)
    flags = ["--out", str(out), "--compare", "reranker.kind=none"]
    result = run_eval(dataset, *flags, data_dir=corpus_index.data_dir, env=EXTRACTIVE)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_eval_writes_answers_metrics_config_and_report(eval_run):
    out, output = eval_run
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == ["only-question", "rec-ray-1", "oos-1"]
    assert answers[1]["recommendation"] == "ray-serve" and answers[2]["declined"]
    assert answers[1]["retrieved"] and {"ref", "text"} <= set(answers[1]["retrieved"][0])
    metrics = json.loads((out / "metrics.json").read_text())
    base = metrics["runs"][0]["metrics"]
    assert base["citations"]["validity"]["value"] == 1.0
    assert base["recommendation"]["accuracy"] == {"value": 1.0, "n": 1}
    assert base["scope"]["decline_rate"]["value"] == 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["generator"]["kind"] == "extractive"
    assert "report:" in output and "targets met" in output
    assert (out / "report.md").read_text().startswith("# ")


def test_compared_variant_gets_its_own_answers_and_a_column(eval_run):
    out, _ = eval_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["label"] for r in metrics["runs"]] == ["base", "reranker.kind=none"]
    assert metrics["runs"][1]["overrides"] == {"reranker": {"kind": "none"}}
    assert (out / "runs" / "reranker.kind_none" / "answers.jsonl").is_file()
    assert "reranker.kind=none" in (out / "report.md").read_text()


def test_items_with_a_corpus_get_a_fresh_index(corpus_index, tmp_path):
    manifest = write(
        tmp_path / "mine.yaml",
        yaml.safe_dump(
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "zebra-ranker"},
                "spec": {
                    "predictor": {"model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://zoo/zebra"}}
                },
            }
        ),
    )
    dataset = write(
        tmp_path / "d.yaml",
        yaml.safe_dump(
            {
                "items": [
                    {
                        "id": "m-1",
                        "question": "Where is the zebra-ranker model stored?",
                        "corpus": str(manifest),
                        "fields": ["InferenceService/zebra-ranker spec.predictor.model.storageUri"],
                    },
                    {"id": "m-2", "question": "What does the corpus say?", "corpus": "no/such/dir"},
                ]
            }
        ),
    )
    out = tmp_path / "out"
    result = run_eval(dataset, "--out", str(out), data_dir=corpus_index.data_dir, env=EXTRACTIVE)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "metrics.json").read_text())["runs"][0]
    assert run["skipped"] == [
        {"id": "m-2", "reason": f"corpus no/such/dir not found (looked in . and {tmp_path})"}
    ]
    answer = json.loads((out / "answers.jsonl").read_text())
    assert "InferenceService/zebra-ranker" in [c["id"] for c in answer["citations"]]
    sources = json.loads((Path(corpus_index.data_dir) / "manifest.json").read_text())["sources"]
    assert not any("zebra" in s for s in sources)


def test_endpoint_that_is_down_is_a_clear_error(tmp_path):
    dataset = write(tmp_path / "d.yaml", "- {id: a, question: q}\n")
    result = run_eval(dataset, "--endpoint", "http://127.0.0.1:9", "--out", str(tmp_path / "o"))
    assert result.exit_code != 0
    assert "cannot reach http://127.0.0.1:9" in str(result.exception)


def test_compare_with_an_endpoint_is_refused(tmp_path):
    dataset = write(tmp_path / "d.yaml", "- {id: a, question: q}\n")
    result = run_eval(dataset, "--endpoint", "http://127.0.0.1:9", "--compare", "retrieval.top_k=3")
    assert "cannot be used with --endpoint" in str(result.exception)


def test_check_exits_1_when_a_target_is_missed(corpus_index, tmp_path):
    question = "We run all our pipelines on Ray already; which serving platform should we use?"
    dataset = write(
        tmp_path / "d.yaml", yaml.safe_dump([{"id": "wrong-gold", "question": question, "scope": "out"}])
    )
    flags = ["--out", str(tmp_path / "o"), "--check"]
    result = run_eval(dataset, *flags, data_dir=corpus_index.data_dir, env=EXTRACTIVE)
    assert result.exit_code == 1, result.output
    assert "MISS Out-of-scope declined: 0.0%" in result.output
