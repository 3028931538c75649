"""BM25 lexical index, incremental and persisted next to the vector store.

Tokens keep manifest vocabulary searchable: ``canaryTrafficPercent`` and
``tensor_parallel_size`` are indexed whole and by their parts.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import snowballstemmer

from assistant.errors import StoreError
from assistant.types import Chunk

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")
_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "too",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
FORMAT = 3  # bump when tokenize() changes: saved indexes are then rebuilt


_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """English Snowball stem of a lower-case word."""
    return _STEMMER.stemWord(word)


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed terms; compound identifiers also yield their (stemmed) parts."""
    terms: list[str] = []
    for word in _WORD.findall(text):
        whole = word.lower().strip("._-/")
        parts = [p.lower() for p in _PART.findall(word)]
        if whole and whole not in STOPWORDS:
            terms.append(stem(whole) if whole.isalpha() and len(parts) <= 1 else whole)
        if len(parts) > 1:
            terms.extend(stem(p) for p in parts if len(p) > 1 and p not in STOPWORDS and p != whole)
    return terms


class BM25Index:
    """Okapi BM25 over chunk texts with per-chunk source type and platform for filtering."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs: dict[str, tuple[str, str, dict[str, int]]] = {}
        self.generation = -1
        self._frozen: _Frozen | None = None

    def add(self, chunks: list[Chunk]) -> None:
        """Index (or re-index) chunks."""
        for c in chunks:
            self.docs[c.id] = (c.source_type, c.platform, dict(Counter(tokenize(c.text))))
        self._frozen = None

    def remove(self, ids: list[str]) -> None:
        """Drop chunks by id."""
        for i in ids:
            self.docs.pop(i, None)
        self._frozen = None

    def __len__(self) -> int:
        return len(self.docs)

    def search(
        self, query: str, n: int, source_types: tuple[str, ...] = (), platforms: tuple[str, ...] = ()
    ) -> list[tuple[str, float]]:
        """Top ``n`` (chunk id, BM25 score) for the query, best first; zero scores left out."""
        frozen = self._frozen or self._freeze()
        terms = [t for t in set(tokenize(query)) if t in frozen.postings]
        if not terms or not self.docs:
            return []
        scores = np.zeros(len(frozen.ids), dtype=np.float32)
        for term in terms:
            rows, tfs = frozen.postings[term]
            idf = math.log(1 + (len(frozen.ids) - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = self.k1 * (1 - self.b + self.b * frozen.lengths[rows] / frozen.avg_len)
            scores[rows] += idf * tfs * (self.k1 + 1) / (tfs + norm)
        scores *= frozen.mask(source_types, platforms)
        top = (
            np.argpartition(-scores, min(n, len(scores) - 1))[:n]
            if len(scores) > n
            else np.arange(len(scores))
        )
        top = top[np.argsort(-scores[top])]
        return [(frozen.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def _freeze(self) -> _Frozen:
        self._frozen = _Frozen(self.docs)
        return self._frozen

    def save(self, path: Path, generation: int) -> None:
        """Write atomically (temp file + rename), stamped with the index generation."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        payload = {"format": FORMAT, "generation": generation, "k1": self.k1, "b": self.b, "docs": self.docs}
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
            json.dump(payload, fh, separators=(",", ":"))
        os.replace(tmp, path)
        self.generation = generation

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        """Read a saved index; a missing file gives an empty index with generation -1."""
        index = cls()
        if not path.exists():
            return index
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                payload = json.load(fh)
        except (OSError, ValueError) as exc:
            raise StoreError(f"lexical index {path} is unreadable ({exc}); re-run ingest") from exc
        if payload.get("format") != FORMAT:
            return index
        index.k1, index.b = payload["k1"], payload["b"]
        index.docs = {k: (v[0], v[1], v[2]) for k, v in payload["docs"].items()}
        index.generation = int(payload["generation"])
        return index


class _Frozen:
    """Array form of the index for fast scoring; rebuilt after any change."""

    def __init__(self, docs: dict[str, tuple[str, str, dict[str, int]]]) -> None:
        self.ids = list(docs)
        self.types = np.array([d[0] for d in docs.values()], dtype=object)
        self.platforms = np.array([d[1] for d in docs.values()], dtype=object)
        self.lengths = np.array([sum(d[2].values()) for d in docs.values()], dtype=np.float32)
        self.avg_len = float(self.lengths.mean()) if len(self.lengths) else 1.0
        rows: dict[str, list[int]] = {}
        tfs: dict[str, list[int]] = {}
        for row, (_, _, terms) in enumerate(docs.values()):
            for term, tf in terms.items():
                rows.setdefault(term, []).append(row)
                tfs.setdefault(term, []).append(tf)
        self.postings = {
            t: (np.array(rows[t], dtype=np.int32), np.array(tfs[t], dtype=np.float32)) for t in rows
        }
        self._masks: dict[tuple, np.ndarray] = {}

    def mask(self, source_types: tuple[str, ...], platforms: tuple[str, ...]) -> np.ndarray:
        key = (source_types, platforms)
        if key not in self._masks:
            m = np.ones(len(self.ids), dtype=np.float32)
            if source_types:
                m *= np.isin(self.types, source_types)
            if platforms:
                m *= np.isin(self.platforms, platforms)
            self._masks[key] = m
        return self._masks[key]
