"""Answer-quality metrics (eval/metrics.py) on hand-made items and answers: no model, no I/O."""

from __future__ import annotations

import json

import pytest

from eval.metrics import (
    citation_precision,
    citation_recall,
    citation_valid,
    concepts_missed,
    f1_by_class,
    field_citation_recall,
    gold_refs,
    latency_metrics,
    percentile,
    recommendation_metrics,
    retrieval_scores,
    rows,
    score,
    text_supported,
)

MANIFEST_TEXT = (
    "InferenceService/fraud-detector (namespace risk) from manifests/fraud.yaml\n"
    "canary: 10 at spec.predictor.canaryTrafficPercent\n"
    "storage: gs://models/fraud/v15 at spec.predictor.model.storageUri\n"
    "replicas: 2 at spec.predictor.minReplicas"
)


def answer(text: str = "", rec: str | None = None, declined: bool = False, citations=(), **timings) -> dict:
    """An Answer-contract dict."""
    return {
        "answer": text,
        "recommendation": rec,
        "confidence": 0.5,
        "declined": declined,
        "citations": [
            {"id": c[0], "title": c[0], "source": "s", "locator": c[2] if len(c) > 2 else c[0], "text": c[1]}
            for c in citations
        ],
        "timings": timings,
        "model": "fake",
        "conversation_id": "c1",
    }


def item(id_: str, **labels) -> dict:
    return {"id": id_, "question": f"question {id_}?", **labels}


# ------------------------------------------------------------------------------------------- retrieval


def test_gold_refs_are_criteria_then_field_objects_without_duplicates():
    it = item(
        "m",
        criteria=["review/rollback-unit"],
        fields=[
            "InferenceService/fraud-detector spec.predictor.canaryTrafficPercent",
            "InferenceService/fraud-detector spec.predictor.model.storageUri",
        ],
    )
    assert gold_refs(it) == ["review/rollback-unit", "InferenceService/fraud-detector"]
    assert gold_refs(item("bare")) == []


def test_retrieval_matches_document_sections_of_a_gold_document():
    it = item("r", criteria=["fit/kserve-one-api-many-teams", "kserve/canary-rollout"])
    retrieved = [{"id": "dimension/rollouts"}, {"id": "kserve/canary-rollout#traffic"}, {"id": "x/y"}]
    # gold kserve/canary-rollout is found at rank 2 through its section; the fit criterion is not found
    assert retrieval_scores(it, retrieved) == {"hit": 1.0, "recall": 0.5, "mrr": 0.5}
    assert retrieval_scores(it, retrieved, k=1) == {"hit": 0.0, "recall": 0.0, "mrr": 0.0}
    # a section ref never counts as another document that merely shares a prefix
    assert retrieval_scores(it, [{"id": "kserve/canary-rollout-old"}])["hit"] == 0.0
    # ScoredChunk.as_dict() rows carry a chunk hash as "id" and the ref as "ref"
    assert retrieval_scores(it, [{"id": "3fa9c0", "ref": "fit/kserve-one-api-many-teams"}])["mrr"] == 1.0


def test_retrieval_skips_items_without_gold_and_scores_empty_retrieval_as_miss():
    assert retrieval_scores(item("bare"), [{"id": "a"}]) is None
    assert retrieval_scores(item("oos", criteria=[], fields=[]), [{"id": "a"}]) is None
    assert retrieval_scores(item("r", criteria=["a/b"]), []) == {"hit": 0.0, "recall": 0.0, "mrr": 0.0}


# ------------------------------------------------------------------------------------------- citations


def test_citation_precision_and_recall_with_sections_and_field_objects():
    it = item(
        "m",
        criteria=["kserve/canary-rollout"],
        fields=["InferenceService/fraud-detector spec.predictor.canaryTrafficPercent"],
    )
    a = answer(
        citations=[
            ("kserve/canary-rollout#promote", "t"),
            (
                "InferenceService/fraud-detector",
                "t",
                "InferenceService/fraud-detector spec.predictor.minReplicas",
            ),
            ("ray-serve/autoscaling", "t"),
        ]
    )
    assert citation_precision(it, a) == pytest.approx(2 / 3)
    assert citation_recall(it, a) == 1.0
    # the object is cited, but through another field path than the gold one
    assert field_citation_recall(it, a) == 0.0
    exact = answer(citations=[("InferenceService/fraud-detector", "t", it["fields"][0])])
    assert field_citation_recall(it, exact) == 1.0
    assert citation_recall(it, exact) == 0.5


def test_citation_metrics_skip_items_without_gold_or_citations():
    assert citation_precision(item("bare"), answer(citations=[("a", "t")])) is None
    assert citation_recall(item("bare"), answer(citations=[("a", "t")])) is None
    assert field_citation_recall(item("c", criteria=["a"]), answer()) is None
    it = item("c", criteria=["a/b"])
    assert citation_precision(it, answer()) is None
    assert citation_recall(it, answer()) == 0.0


def test_citation_validity_rule():
    doc = {"id": "kserve/canary-rollout#traffic", "text": "Set canaryTrafficPercent to 10. Then promote."}
    manifest = {"id": "InferenceService/fraud-detector", "text": MANIFEST_TEXT}
    retrieved = [doc, manifest, {"id": "criteria/no-text"}]

    def cite(id_: str, text: str) -> dict:
        return {"id": id_, "title": "", "source": "", "locator": id_, "text": text}

    assert citation_valid(cite(doc["id"], doc["text"]), retrieved)
    assert citation_valid(cite(doc["id"], "Set canaryTrafficPercent to 10."), retrieved)
    # a manifest summary: the header plus a subset of the passage's field lines, in another order
    summary = "\n".join(MANIFEST_TEXT.splitlines()[i] for i in (0, 3, 1))
    assert citation_valid(cite(manifest["id"], summary), retrieved)
    # a retrieved passage without text: the id is all there is to check
    assert citation_valid(cite("criteria/no-text", "anything"), retrieved)
    # invented text, text of another passage, dangling id, section-only match of the id
    assert not citation_valid(cite(doc["id"], "Set canaryTrafficPercent to 50."), retrieved)
    assert not citation_valid(cite(doc["id"], "canary: 10 at spec.predictor.canaryTrafficPercent"), retrieved)
    assert not citation_valid(cite("ray-serve/autoscaling", "x"), retrieved)
    assert not citation_valid(cite("kserve/canary-rollout", doc["text"]), retrieved)
    assert not text_supported("canary: 50 at spec.predictor.canaryTrafficPercent", MANIFEST_TEXT)


# -------------------------------------------------------------------------------------- recommendation


def test_macro_f1_on_a_hand_computed_confusion():
    # gold:  kserve kserve kserve ray   ray   none
    # pred:  kserve kserve ray    ray   none  none
    # kserve:    TP 2, FP 0, FN 1 -> F1 = 4 / 5 = 0.8
    # ray-serve: TP 1, FP 1, FN 1 -> F1 = 2 / 4 = 0.5
    # none:      TP 1, FP 1, FN 0 -> F1 = 2 / 3
    # macro-F1 = (0.8 + 0.5 + 2/3) / 3 = 0.65556; accuracy on the 5 kserve/ray items = 3/5
    gold = ["kserve", "kserve", "kserve", "ray-serve", "ray-serve", "none"]
    pred = ["kserve", "kserve", "ray-serve", "ray-serve", None, None]
    items = [item(f"i{n}", platform=g) for n, g in enumerate(gold)]
    pairs = [(it, answer(rec=p)) for it, p in zip(items, pred, strict=True)]
    rec = recommendation_metrics(pairs)
    assert rec["macro_f1"]["per_class"] == pytest.approx({"kserve": 0.8, "ray-serve": 0.5, "none": 2 / 3})
    assert rec["macro_f1"]["value"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert rec["macro_f1"]["n"] == 6
    assert rec["accuracy"] == {"value": pytest.approx(0.6), "n": 5}
    assert rec["no_overclaim"] == {"value": 1.0, "n": 1}


def test_recommendation_null_is_wrong_overclaim_counts_and_absent_classes_are_left_out():
    pairs = [
        (item("k", platform="kserve"), answer(rec=None)),
        (item("n1", platform="none"), answer(rec="kserve")),
        (item("n2", platform="none"), answer(rec=None)),
        (item("bare"), answer(rec="kserve")),
    ]
    rec = recommendation_metrics(pairs)
    assert rec["accuracy"] == {"value": 0.0, "n": 1}
    assert rec["no_overclaim"] == {"value": 0.5, "n": 2}
    # ray-serve is neither gold nor predicted, so only kserve (F1 0) and none (2/(2+1+1)) are averaged
    assert set(rec["macro_f1"]["per_class"]) == {"kserve", "none"}
    assert rec["macro_f1"]["value"] == pytest.approx(0.25)
    assert f1_by_class([], []) == {}


# ----------------------------------------------------------------------------------- scope & concepts


def test_scope_decline_and_false_decline_rates():
    items = [
        item("oos-1", scope="out"),
        item("oos-2", scope="out"),
        item("in-1", scope="in"),
        item("in-2"),  # scope defaults to in
    ]
    answers = {
        "oos-1": answer("Not covered by my sources.", declined=True),
        "oos-2": answer("Paris.", declined=False),  # out of scope, answered anyway
        "in-1": answer("Use KServe.", rec="kserve"),
        "in-2": answer("I can't tell.", declined=True),
    }
    result = score(items, answers)["scope"]
    assert result["decline_rate"] == {"value": 0.5, "n": 2}
    assert result["false_decline_rate"] == {"value": 0.5, "n": 2}


def test_concept_coverage_is_case_insensitive_and_per_group():
    it = item("c", concepts=[["canaryTrafficPercent", "10%"], ["v14"], ["v15", "new version"]])
    assert concepts_missed(it, "The CANARYTRAFFICPERCENT is 10; the New Version gets it.") == [["v14"]]
    items = [it, item("full", concepts=[["Ray"]]), item("none-labelled")]
    answers = {
        "c": answer("canarytrafficpercent on v15"),
        "full": answer("ray serve"),
        "none-labelled": answer("x"),
    }
    concepts = score(items, answers)["concepts"]
    assert concepts["coverage"] == {"value": pytest.approx((2 / 3 + 1) / 2), "n": 2}
    assert concepts["fully_covered"] == {"value": 0.5, "n": 2}


# -------------------------------------------------------------------------------------------- latency


def test_percentile_nearest_rank():
    values = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6]
    assert percentile(values, 50) == 5
    assert percentile(values, 95) == 10
    assert percentile(values, 90) == 9
    assert percentile([7.0], 95) == 7.0
    assert percentile([1, 2], 0) == 1


def test_latency_per_timing_key_present():
    answers = [
        answer(total_ms=100.0, generate_ms=80.0),
        answer(total_ms=300.0, generate_ms=250.0, first_token_ms=40.0),
        answer(total_ms=200.0, generate_ms=150.0),
        answer(),
    ]
    lat = latency_metrics(answers)
    assert set(lat) == {"total_ms", "generate_ms", "first_token_ms"}
    assert lat["total_ms"] == {"p50": 200.0, "p95": 300.0, "n": 3}
    assert lat["first_token_ms"] == {"p50": 40.0, "p95": 40.0, "n": 1}


# ------------------------------------------------------------------------------------------ score/rows


def dataset():
    items = [
        item(
            "rec-1",
            platform="kserve",
            criteria=["fit/kserve-one-api-many-teams", "kserve/canary-rollout"],
            fields=[],
            concepts=[["InferenceService"], ["team"]],
            scope="in",
        ),
        item(
            "manifest-1",
            platform="none",
            criteria=[],
            fields=["InferenceService/fraud-detector spec.predictor.canaryTrafficPercent"],
            concepts=[["canaryTrafficPercent", "10%"], ["v14"]],  # half covered by the answer below
        ),
        item("oos-1", platform="none", criteria=[], fields=[], concepts=[], scope="out"),
        item("bare"),  # only id and question
        item("unanswered", platform="ray-serve", criteria=["fit/ray-serve-existing-ray"]),
    ]
    answers = {
        "rec-1": answer(
            "KServe gives each team one InferenceService API [1].",
            rec="kserve",
            citations=[
                ("fit/kserve-one-api-many-teams", "One API for many teams."),
                ("ray-serve/autoscaling", "Invented text."),  # dangling: never retrieved
            ],
            retrieve_ms=10.0,
            total_ms=500.0,
        ),
        "manifest-1": answer(
            "The canary gets 10% [1].",
            citations=[
                (
                    "InferenceService/fraud-detector",
                    "\n".join(MANIFEST_TEXT.splitlines()[:2]),
                    "InferenceService/fraud-detector spec.predictor.canaryTrafficPercent",
                )
            ],
            retrieve_ms=12.0,
            total_ms=700.0,
        ),
        "oos-1": answer("Paris.", rec=None, declined=False, total_ms=100.0),
        "bare": answer("Something.", rec="ray-serve"),
        "unanswered": None,  # no answer produced
    }
    retrieved = {
        "rec-1": [
            {"id": "fit/kserve-one-api-many-teams", "text": "Title\nOne API for many teams. More."},
            {"id": "kserve/canary-rollout#traffic", "text": "Canary."},
        ],
        "manifest-1": [
            {"id": "dimension/rollouts", "text": "x"},
            {"id": "InferenceService/fraud-detector", "text": MANIFEST_TEXT},
        ],
    }
    return items, answers, retrieved


def test_score_end_to_end_with_missing_answers_and_bare_items():
    items, answers, retrieved = dataset()
    result = score(items, answers, retrieved)
    json.dumps(result)  # JSON-friendly
    assert result["items"] == 5
    assert result["answered"] == 4
    assert result["missing"] == ["unanswered"]

    ret = result["retrieval"]
    assert ret["k"] is None
    # rec-1: both gold refs found (one via a section), first at rank 1; manifest-1: object found at rank 2
    assert ret["hit"] == {"value": 1.0, "n": 2}
    assert ret["recall"] == {"value": 1.0, "n": 2}
    assert ret["mrr"] == {"value": 0.75, "n": 2}
    assert score(items, answers, retrieved, k=1)["retrieval"]["recall"]["value"] == pytest.approx(0.25)

    cit = result["citations"]
    assert cit["precision"] == {"value": pytest.approx((0.5 + 1.0) / 2), "n": 2}
    assert cit["recall"] == {"value": pytest.approx((0.5 + 1.0) / 2), "n": 2}
    assert cit["field_recall"] == {"value": 1.0, "n": 1}
    validity = cit["validity"]
    assert validity["value"] == pytest.approx(2 / 3)
    assert validity["value"] < 1.0
    assert (validity["n"], validity["items"], validity["invalid"], validity["all_valid"]) == (3, 2, 1, False)

    rec = result["recommendation"]
    assert rec["accuracy"] == {"value": 1.0, "n": 1}
    assert rec["no_overclaim"] == {"value": 1.0, "n": 2}
    assert result["scope"]["decline_rate"] == {"value": 0.0, "n": 1}
    assert result["scope"]["false_decline_rate"] == {"value": 0.0, "n": 3}
    assert result["concepts"]["coverage"] == {"value": pytest.approx(0.75), "n": 2}
    assert result["latency"]["total_ms"] == {"p50": 500.0, "p95": 700.0, "n": 3}
    assert result["latency"]["retrieve_ms"]["n"] == 2


def test_score_without_retrieved_skips_retrieval_and_validity():
    items, answers, _ = dataset()
    result = score(items, answers)
    assert result["retrieval"]["hit"] == {"value": None, "n": 0}
    assert result["citations"]["validity"]["n"] == 0
    assert result["citations"]["validity"]["value"] is None
    assert result["citations"]["precision"]["n"] == 2


def test_retrieved_can_come_with_the_answer():
    it = item("r", criteria=["a/b"])
    a = answer(citations=[("a/b", "text")])
    a["retrieved"] = [{"id": "a/b", "text": "the text"}]
    result = score([it], {"r": a})
    assert result["retrieval"]["mrr"] == {"value": 1.0, "n": 1}
    assert result["citations"]["validity"]["all_valid"] is True


def test_score_of_nothing():
    result = score([], {})
    json.dumps(result)
    assert result["answered"] == 0
    assert result["recommendation"]["macro_f1"]["value"] is None
    assert result["latency"] == {}


def test_rows():
    items, answers, retrieved = dataset()
    by_id = {r["id"]: r for r in rows(items, answers, retrieved)}
    assert list(by_id) == [i["id"] for i in items]
    assert by_id["unanswered"] == {
        "id": "unanswered",
        "platform": "ray-serve",
        "scope": "in",
        "missing": True,
    }
    rec = by_id["rec-1"]
    assert (rec["platform"], rec["got"], rec["correct"], rec["declined"]) == ("kserve", "kserve", True, False)
    assert rec["cited"] == ["fit/kserve-one-api-many-teams", "ray-serve/autoscaling"]
    assert rec["invalid_citations"] == ["ray-serve/autoscaling"]
    assert rec["concepts_missed"] == []
    assert by_id["manifest-1"]["invalid_citations"] == []
    assert by_id["oos-1"]["correct"] is True
    bare = by_id["bare"]
    assert (bare["platform"], bare["correct"], bare["invalid_citations"], bare["concepts_missed"]) == (
        None,
        None,
        None,
        [],
    )
    json.dumps(list(by_id.values()))
