"""Retrieval metrics over a labelled query set: recall@k, hit@k and MRR.

A result matches a gold ref when its ref equals it, or when the gold ref names a whole document
(``kserve/canary-rollout``) and the result is one of its sections (``kserve/canary-rollout#...``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from assistant.errors import InputError


@dataclass(frozen=True, slots=True)
class RetrievalItem:
    """One labelled query."""

    id: str
    query: str
    relevant: tuple[str, ...]
    type: str = "any"


@dataclass
class RetrievalReport:
    """Aggregate metrics and the items that missed."""

    k: int
    recall: float
    hit: float
    mrr: float
    n: int
    misses: list[dict] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"recall@{self.k} {self.recall:.3f}  hit@{self.k} {self.hit:.3f}  "
            f"MRR {self.mrr:.3f}  (n={self.n})"
        )


def load_items(path: str | Path) -> list[RetrievalItem]:
    """Read a retrieval dataset (YAML with an ``items`` list)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a mapping with an 'items' list")
    return [
        RetrievalItem(str(i["id"]), str(i["query"]), tuple(i["relevant"]), i.get("type", "any"))
        for i in items
    ]


def matches(ref: str, gold: str) -> bool:
    """Whether a retrieved ref counts as the gold ref."""
    return ref == gold or ref.startswith(gold + "#")


def evaluate(
    search: Callable[[str, int], list[str]], items: list[RetrievalItem], k: int = 5
) -> RetrievalReport:
    """Score ``search(query, k) -> refs`` over the items."""
    recall = hit = mrr = 0.0
    misses = []
    for item in items:
        refs = search(item.query, k)
        found = [g for g in item.relevant if any(matches(r, g) for r in refs[:k])]
        recall += len(found) / len(item.relevant)
        hit += bool(found)
        rank = next((n for n, r in enumerate(refs, 1) if any(matches(r, g) for g in item.relevant)), None)
        mrr += 1 / rank if rank else 0.0
        if len(found) < len(item.relevant):
            misses.append(
                {
                    "id": item.id,
                    "query": item.query,
                    "missing": sorted(set(item.relevant) - set(found)),
                    "got": refs[:k],
                }
            )
    n = len(items) or 1
    return RetrievalReport(k, recall / n, hit / n, mrr / n, len(items), misses)
