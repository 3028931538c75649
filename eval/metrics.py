"""Answer-quality metrics: score answers (the Answer contract) against the gold labels of a dataset.

Pure functions over plain dicts: no model, no I/O. Items are dataset entries (``eval/datasets/dev.yaml``);
answers are ``Answer`` dicts keyed by item id; retrieved passages (``[{"id"|"ref", "text", "locator"}]``)
come per item from ``retrieved_by_id`` or, failing that, from the answer's own ``"retrieved"`` key.

Every metric skips the items that lack its gold label (or its input) and reports how many it used as
``n``; a metric with ``n == 0`` has ``value: None``. Items without an answer are listed as missing and
left out of every metric. Gold refs match retrieved or cited refs by :func:`eval.retrieval.matches`: equal,
or the gold ref names a whole document and the ref is one of its sections (``doc#section``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eval.retrieval import RetrievalItem, evaluate, matches

Item = Mapping[str, Any]
Answer = Mapping[str, Any]
Passage = Mapping[str, Any]

#: The recommendation classes; ``none`` stands for a null recommendation.
CLASSES = ("kserve", "ray-serve", "none")


# ----------------------------------------------------------------------------------------- helpers


def metric(values: Iterable[float]) -> dict[str, Any]:
    """``{"value": mean or None, "n": count}`` for a list of per-item values."""
    values = list(values)
    return {"value": sum(values) / len(values) if values else None, "n": len(values)}


def field_object(field_ref: str) -> str:
    """The object part of a gold field ref: ``"InferenceService/x spec.a"`` -> ``"InferenceService/x"``."""
    return field_ref.split(None, 1)[0] if field_ref.strip() else ""


def gold_refs(item: Item) -> list[str]:
    """Gold criteria then the objects of the gold fields, without duplicates (order kept)."""
    refs = [*(item.get("criteria") or []), *(field_object(f) for f in item.get("fields") or [])]
    return list(dict.fromkeys(r for r in refs if r))


def passage_ref(passage: Passage) -> str:
    """A retrieved passage's ref: its ``ref`` key when present (``ScoredChunk.as_dict``), else its ``id``."""
    return str(passage.get("ref") or passage.get("id") or "")


def rec_class(recommendation: str | None) -> str:
    """The recommendation as one of :data:`CLASSES` (null or empty -> ``none``)."""
    return recommendation or "none"


def retrieved_for(item_id: str, answer: Answer | None, retrieved_by_id: Mapping | None) -> list | None:
    """The passages an answer was built from, or None when they are not known."""
    if retrieved_by_id is not None and item_id in retrieved_by_id:
        return list(retrieved_by_id[item_id] or [])
    if answer is not None and answer.get("retrieved") is not None:
        return list(answer["retrieved"])
    return None


def answered(items: Sequence[Item], answers_by_id: Mapping[str, Answer]) -> list[tuple[Item, Answer]]:
    """The (item, answer) pairs of the items that have an answer."""
    return [(item, a) for item in items if (a := answers_by_id.get(item["id"])) is not None]


# --------------------------------------------------------------------------------------- retrieval


def retrieval_scores(item: Item, passages: Sequence[Passage], k: int | None = None) -> dict | None:
    """hit@k, recall@k and reciprocal rank of one item's retrieved refs against its gold refs.

    Uses :func:`eval.retrieval.evaluate` so the numbers agree with the retrieval harness; k defaults to
    the number of retrieved passages. None when the item has no gold refs.
    """
    gold = gold_refs(item)
    if not gold:
        return None
    refs = [passage_ref(p) for p in passages]
    k = len(refs) if k is None else k
    report = evaluate(lambda _q, _k: refs[:k], [RetrievalItem(item["id"], item["question"], tuple(gold))], k)
    return {"hit": report.hit, "recall": report.recall, "mrr": report.mrr}


def retrieval_metrics(scored: list[dict], k: int | None) -> dict[str, Any]:
    """Retrieval: hit@k is the share of items with at least one gold ref (criterion or field object) in
    the first k retrieved refs, recall@k the share of gold refs found there (averaged over items), and MRR
    the mean reciprocal rank of the first gold ref (0 when none); k is the number retrieved unless given.
    """
    return {
        "k": k,
        "hit": metric(s["hit"] for s in scored),
        "recall": metric(s["recall"] for s in scored),
        "mrr": metric(s["mrr"] for s in scored),
    }


# --------------------------------------------------------------------------------------- citations


def cited_ids(answer: Answer) -> list[str]:
    """The ids of an answer's citations, in order."""
    return [str(c.get("id", "")) for c in answer.get("citations") or []]


def citation_precision(item: Item, answer: Answer) -> float | None:
    """Share of the answer's citations whose id matches a gold ref; None without gold refs or citations."""
    gold, ids = gold_refs(item), cited_ids(answer)
    if not gold or not ids:
        return None
    return sum(any(matches(i, g) for g in gold) for i in ids) / len(ids)


def citation_recall(item: Item, answer: Answer) -> float | None:
    """Share of the item's gold refs that some citation id matches; None without gold refs."""
    gold, ids = gold_refs(item), cited_ids(answer)
    if not gold:
        return None
    return sum(any(matches(i, g) for i in ids) for g in gold) / len(gold)


def field_citation_recall(item: Item, answer: Answer) -> float | None:
    """Share of the item's gold field refs that a citation's locator names exactly; None without fields."""
    fields = [" ".join(f.split()) for f in item.get("fields") or []]
    if not fields:
        return None
    locators = {" ".join(str(c.get("locator", "")).split()) for c in answer.get("citations") or []}
    return sum(f in locators for f in fields) / len(fields)


def text_supported(cited: str, source: str) -> bool:
    """Whether cited text came from a passage: contained in it, or (a manifest summary) every non-empty
    line of it is a line of the passage."""
    if cited.strip() in source:
        return True
    lines = {line.strip() for line in source.splitlines()}
    return all(line.strip() in lines for line in cited.splitlines() if line.strip())


def citation_valid(citation: Mapping[str, Any], passages: Sequence[Passage]) -> bool:
    """A citation is valid when a retrieved passage has exactly its id and, where that passage has text,
    the cited text is supported by it (:func:`text_supported`)."""
    same = [p for p in passages if passage_ref(p) == citation.get("id")]
    return any(
        p.get("text") is None or text_supported(str(citation.get("text", "")), p["text"]) for p in same
    )


def invalid_citations(answer: Answer, passages: Sequence[Passage]) -> list[str]:
    """Ids of the answer's citations that are not valid against the retrieved passages."""
    return [str(c.get("id", "")) for c in answer.get("citations") or [] if not citation_valid(c, passages)]


def validity_metrics(checked: list[tuple[int, list[str]]]) -> dict[str, Any]:
    """Citation validity: the share of citations whose id was retrieved for that answer and whose text
    came from that passage; 1.0 only if every citation of every checked answer is valid.

    ``checked`` holds (citation count, invalid ids) per answer whose retrieved passages are known.
    """
    total = sum(n for n, _ in checked)
    invalid = sum(len(bad) for _, bad in checked)
    return {
        "value": (total - invalid) / total if total else None,
        "n": total,
        "items": len(checked),
        "invalid": invalid,
        "all_valid": invalid == 0,
    }


def citation_metrics(pairs: list[tuple[Item, Answer]], retrieved_by_id: Mapping | None) -> dict[str, Any]:
    """Citations: precision is the share of an answer's citations whose id matches a gold criterion or a
    gold field's object; recall the share of gold refs some citation matches; field recall the share of
    gold field refs a citation's locator names exactly; each averaged over items with gold (and, for
    precision, citations)."""
    checked = []
    for item, answer in pairs:
        passages = retrieved_for(item["id"], answer, retrieved_by_id)
        if passages is not None:
            checked.append((len(answer.get("citations") or []), invalid_citations(answer, passages)))
    return {
        "precision": metric(v for i, a in pairs if (v := citation_precision(i, a)) is not None),
        "recall": metric(v for i, a in pairs if (v := citation_recall(i, a)) is not None),
        "field_recall": metric(v for i, a in pairs if (v := field_citation_recall(i, a)) is not None),
        "validity": validity_metrics(checked),
    }


# ---------------------------------------------------------------------------------- recommendation


def f1_by_class(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """F1 of each class that occurs in gold or predictions: 2·TP / (2·TP + FP + FN)."""
    scores = {}
    for cls in CLASSES:
        tp = sum(g == p == cls for g, p in zip(gold, pred, strict=True))
        fp = sum(p == cls != g for g, p in zip(gold, pred, strict=True))
        fn = sum(g == cls != p for g, p in zip(gold, pred, strict=True))
        if tp + fp + fn:
            scores[cls] = 2 * tp / (2 * tp + fp + fn)
    return scores


def recommendation_metrics(pairs: list[tuple[Item, Answer]]) -> dict[str, Any]:
    """Recommendation: accuracy is the share of gold kserve/ray-serve items whose recommendation equals
    the gold platform (null counts as wrong); macro-F1 averages per-class F1 over {kserve, ray-serve, none}
    (none = null recommendation; classes absent from both gold and predictions are left out); no-overclaim
    is the share of gold ``none`` items answered with a null recommendation.
    """
    labelled = [
        (i["platform"], rec_class(a.get("recommendation"))) for i, a in pairs if i.get("platform") in CLASSES
    ]
    gold, pred = [g for g, _ in labelled], [p for _, p in labelled]
    per_class = f1_by_class(gold, pred)
    return {
        "accuracy": metric(float(g == p) for g, p in labelled if g != "none"),
        "macro_f1": {
            "value": sum(per_class.values()) / len(per_class) if per_class else None,
            "n": len(labelled),
            "per_class": per_class,
        },
        "no_overclaim": metric(float(p == "none") for g, p in labelled if g == "none"),
    }


# ------------------------------------------------------------------------------------------- scope


def scope_metrics(pairs: list[tuple[Item, Answer]]) -> dict[str, Any]:
    """Scope: decline rate is the share of ``scope: out`` items the answer declined; false-decline rate
    is the share of in-scope items (scope defaults to ``in``) it declined."""
    out = [bool(a.get("declined")) for i, a in pairs if i.get("scope", "in") == "out"]
    inside = [bool(a.get("declined")) for i, a in pairs if i.get("scope", "in") != "out"]
    return {"decline_rate": metric(map(float, out)), "false_decline_rate": metric(map(float, inside))}


# ---------------------------------------------------------------------------------------- concepts


def concepts_missed(item: Item, text: str) -> list[list[str]]:
    """The concept groups none of whose phrasings occur in the text (case-insensitive substrings)."""
    lowered = text.casefold()
    groups = item.get("concepts") or []
    return [list(g) for g in groups if not any(str(p).casefold() in lowered for p in g)]


def concept_metrics(pairs: list[tuple[Item, Answer]]) -> dict[str, Any]:
    """Concept coverage: the share of an item's concept groups with at least one phrasing in the answer
    text (case-insensitive), averaged over items with concepts; fully covered is the share of those items
    with every group covered."""
    shares = []
    for item, answer in pairs:
        groups = item.get("concepts") or []
        if groups:
            shares.append(1 - len(concepts_missed(item, str(answer.get("answer", "")))) / len(groups))
    return {"coverage": metric(shares), "fully_covered": metric(float(s == 1.0) for s in shares)}


# ----------------------------------------------------------------------------------------- latency


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_metrics(answers: Iterable[Answer]) -> dict[str, dict[str, Any]]:
    """Latency: p50 and p95 (nearest rank, in ms) of each timing key present in the answers, over the
    answers that report it."""
    values: dict[str, list[float]] = {}
    for answer in answers:
        for key, value in (answer.get("timings") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    return {
        key: {"p50": percentile(v, 50), "p95": percentile(v, 95), "n": len(v)}
        for key, v in sorted(values.items())
    }


# ------------------------------------------------------------------------------------ rows & score


def row(item: Item, answer: Answer | None, passages: Sequence[Passage] | None) -> dict[str, Any]:
    """One report row: gold vs. got for an item, with its citations and missed concepts."""
    base = {"id": item["id"], "platform": item.get("platform"), "scope": item.get("scope", "in")}
    if answer is None:
        return {**base, "missing": True}
    got = answer.get("recommendation")
    return {
        **base,
        "missing": False,
        "got": got,
        "correct": rec_class(got) == item["platform"] if item.get("platform") in CLASSES else None,
        "declined": bool(answer.get("declined")),
        "cited": cited_ids(answer),
        "invalid_citations": None if passages is None else invalid_citations(answer, passages),
        "concepts_missed": concepts_missed(item, str(answer.get("answer", ""))),
    }


def rows(
    items: Sequence[Item], answers_by_id: Mapping[str, Answer], retrieved_by_id: Mapping | None = None
) -> list[dict[str, Any]]:
    """Per-item rows for a report, in item order; items without an answer get ``missing: True``."""
    out = []
    for item in items:
        answer = answers_by_id.get(item["id"])
        out.append(row(item, answer, retrieved_for(item["id"], answer, retrieved_by_id)))
    return out


def score(
    items: Sequence[Item],
    answers_by_id: Mapping[str, Answer],
    retrieved_by_id: Mapping | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    """All answer metrics as a nested JSON-friendly dict; every metric carries its own ``n``."""
    pairs = answered(items, answers_by_id)
    scored = []
    for item, answer in pairs:
        passages = retrieved_for(item["id"], answer, retrieved_by_id)
        if passages is not None and (s := retrieval_scores(item, passages, k)) is not None:
            scored.append(s)
    return {
        "items": len(items),
        "answered": len(pairs),
        "missing": [i["id"] for i in items if answers_by_id.get(i["id"]) is None],
        "retrieval": retrieval_metrics(scored, k),
        "citations": citation_metrics(pairs, retrieved_by_id),
        "recommendation": recommendation_metrics(pairs),
        "scope": scope_metrics(pairs),
        "concepts": concept_metrics(pairs),
        "latency": latency_metrics(a for _, a in pairs),
    }
