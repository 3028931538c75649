"""Evaluation datasets: YAML (a mapping with an ``items`` list, or a bare list) or JSONL (one item a line).

Every item needs only ``id`` and ``question``. Optional gold fields: ``history`` (earlier turns),
``platform`` (``kserve``, ``ray-serve``, ``none``), ``criteria`` (gold criterion ids), ``fields`` (gold
manifest field paths ``Kind/name path``), ``concepts`` (groups of acceptable phrasings), ``scope``
(``in`` or ``out``) and ``corpus`` (a path to ingest first into a fresh data dir). Other keys (notes,
``feedback`` from ``servewise feedback export``) are kept and ignored by the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assistant.errors import InputError
from assistant.types import Turn


class EvalItem(BaseModel):
    """One dataset item; gold labels that are absent are simply not scored."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    history: list[Turn] = []
    platform: Literal["kserve", "ray-serve", "none"] | None = None
    criteria: list[str] | None = None
    fields: list[str] | None = None
    concepts: list[list[str]] | None = None
    scope: Literal["in", "out"] | None = None
    corpus: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("concepts", mode="before")
    @classmethod
    def _single_phrasing_groups(cls, value: Any) -> Any:
        """A group may be written as one phrasing: ``["canary", ["batch", "batching"]]``."""
        if isinstance(value, list):
            return [[v] if isinstance(v, str) else v for v in value]
        return value

    @property
    def category(self) -> str:
        """The id without its trailing number: ``rec-kserve-004`` -> ``rec-kserve``."""
        head, _, tail = self.id.rpartition("-")
        return head if head and tail.isdigit() else "other"

    def gold(self) -> dict[str, Any]:
        """The item as the metrics read it (``eval.metrics``): plain dict, absent labels left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        data.setdefault("scope", "in")
        return data


def load_dataset(path: str | Path) -> list[EvalItem]:
    """Read and validate a dataset; :class:`InputError` names the file, the item and the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such dataset file")
    raw = _read_jsonl(path) if path.suffix == ".jsonl" else _read_yaml(path)
    items = [_item(path, n, data) for n, data in raw]
    if not items:
        raise InputError(f"{path}: the dataset has no items")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{path}: duplicate item id {item.id!r}")
        seen.add(item.id)
    return items


def _read_yaml(path: Path) -> list[tuple[int, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of items or a mapping with an 'items' list")
    return list(enumerate(items, 1))


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text") from exc
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
    return out


def _item(path: Path, n: int, data: Any) -> EvalItem:
    where = f"{path} item {n}" if path.suffix != ".jsonl" else f"{path}:{n}"
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with 'id' and 'question'")
    try:
        return EvalItem.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "item"
        label = f" ({data['id']})" if "id" in data else ""
        raise InputError(f"{where}{label}: {field}: {first['msg']}") from exc
