"""What each metric means, as the report and the README state it."""

from __future__ import annotations

#: Every metric of the all-metrics table: dotted path into a run's metrics -> "Name: one-line definition".
METRICS = {
    "retrieval.hit": "Retrieval hit@k: share of items whose top-k retrieved passages include a gold "
    "criterion or manifest object",
    "retrieval.recall": "Retrieval recall@k: share of an item's gold criteria and manifest objects found in "
    "the top k, averaged over items",
    "retrieval.mrr": "Retrieval MRR: mean of 1/rank of the first gold passage retrieved (0 when none is in "
    "the top k)",
    "citations.precision": "Citation precision: share of an answer's citations that name a gold criterion "
    "or manifest object, averaged over items",
    "citations.recall": "Citation recall: share of an item's gold criteria and manifest objects that the "
    "answer cites, averaged over items",
    "citations.field_recall": "Citation field recall: share of gold manifest field paths that a citation's "
    "locator names exactly",
    "citations.validity": "Citation validity: share of all citations (n) whose id was retrieved for that "
    "answer and whose text comes from that passage",
    "recommendation.accuracy": "Recommendation accuracy: share of items with a gold pick (kserve or "
    "ray-serve) answered with that pick",
    "recommendation.macro_f1": "Recommendation macro-F1: mean F1 over the classes kserve, ray-serve and "
    "no pick",
    "recommendation.no_overclaim": "No overclaim: share of items that should get no pick (facts, "
    "trade-offs, out of scope) answered without one",
    "scope.decline_rate": "Decline rate (out of scope): share of out-of-scope items the answer declined",
    "scope.false_decline_rate": "False declines (in scope): share of in-scope items the answer declined "
    "(lower is better)",
    "concepts.coverage": "Concept coverage: share of an item's required concepts found in the answer "
    "text, averaged over items",
    "concepts.fully_covered": "Concepts fully covered: share of items whose answer contains every "
    "required concept",
    "generation.model_kept": "Model text kept: share of answered, not declined items whose generated "
    "text passed verification (the rest were replaced by the composed, cited answer)",
}
#: Metrics that are scores (shown as 0.123), not shares (shown as percent).
SCORES = frozenset({"retrieval.mrr", "recommendation.macro_f1"})
JUDGE_DEFINITIONS = {
    "faithfulness": "LLM judge: share of an answer's claims its retrieved passages support, averaged",
    "relevance": "LLM judge: the 1-5 rating of how well the answer addresses the question, as 0-100%",
}
HEADLINE = ("retrieval.hit", "citations.precision", "recommendation.macro_f1")
CAPTIONS = {
    "targets": "Each target metric per run; the black tick marks the threshold (a ≥ target is met when the "
    "bar reaches it, a ≤ target when the bar stays below it).",
    "confusion": "Gold recommendation (rows) against the answer's recommendation (columns) in the baseline; "
    "the diagonal counts correct answers.",
    "latency": "Median (p50, bar) and 95th percentile (p95, whisker) time per pipeline stage, per run.",
    "categories": "Share of items per category in the baseline answered fully right: correct pick or "
    "no pick, correct decline, no invalid citation and no missed concept.",
}
