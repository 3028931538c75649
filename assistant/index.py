"""The index in the data dir: vector store, lexical index, token store and the source manifest.

``manifest.json`` is the source of truth: which sources are indexed, their content hash and
their chunk ids. It is written atomically *after* new chunks are stored and *before* old ones
are deleted; a ``dirty`` marker is set for the whole write. A killed ingest therefore leaves
either the old or the new manifest, plus orphan chunks that :meth:`Index.reconcile` removes the
next time the index is opened. The lexical index carries the manifest's generation and is
rebuilt from the vector store when they disagree.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.config import Settings
from assistant.embedder import Embedder
from assistant.errors import IndexNotFoundError, StoreError
from assistant.lexical import BM25Index
from assistant.store import VectorStore
from assistant.tokenstore import TokenStore

FORMAT = 1


@dataclass
class SourceRecord:
    """What the manifest keeps per indexed source file."""

    hash: str
    source: str
    chunks: list[str]
    objects: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """The list of indexed sources; ``generation`` grows with every committed change."""

    generation: int = 0
    embedder: str = ""
    sources: dict[str, SourceRecord] = field(default_factory=dict)

    def chunk_ids(self) -> set[str]:
        """Every chunk id that should be in the stores."""
        return {cid for rec in self.sources.values() for cid in rec.chunks}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "generation": self.generation,
            "embedder": self.embedder,
            "sources": {k: vars(v) for k, v in sorted(self.sources.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            generation=int(data.get("generation", 0)),
            embedder=str(data.get("embedder", "")),
            sources={k: SourceRecord(**v) for k, v in data.get("sources", {}).items()},
        )


class Index:
    """Owns the data dir layout; opens each store only when it is first needed."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.data_dir = Path(settings.data_dir)
        self.manifest_path = self.data_dir / "manifest.json"
        self.lexical_path = self.data_dir / "bm25" / "index.json.gz"
        self.dirty_path = self.data_dir / "ingest.dirty"
        self._store: VectorStore | None = None
        self._lexical: BM25Index | None = None
        self._tokens: TokenStore | None = None
        self._opening = threading.RLock()  # the pipeline searches from worker threads
        self.manifest = self._read_manifest()

    @classmethod
    def from_config(cls, settings: Settings, embedder: Embedder | None = None) -> Index:
        """Open the index in ``settings.data_dir``."""
        return cls(settings, embedder)

    def require(self) -> Index:
        """Raise a helpful error when nothing has been ingested; heal a half-done ingest."""
        if not self.manifest.sources:
            raise IndexNotFoundError(f"no index in {self.data_dir}: run 'servewise ingest corpus/' first")
        if self.dirty_path.exists():
            with self._locked(wait=False) as locked:
                if locked:  # no ingest is running, so the marker was left by a killed one
                    self.reconcile()
        return self

    # -- stores -----------------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
        """The Chroma collection, opened on first use (once, whichever thread gets there first)."""
        with self._opening:
            if self._store is None:
                self._store = VectorStore.from_config(self.settings, self.embedder)
            return self._store

    @property
    def tokens(self) -> TokenStore:
        """The token-vector store for MaxSim reranking."""
        with self._opening:
            if self._tokens is None:
                self._tokens = TokenStore(self.data_dir / "tokens.sqlite")
            return self._tokens

    @property
    def lexical(self) -> BM25Index:
        """The BM25 index, rebuilt from the store when it lags the manifest."""
        with self._opening:
            if self._lexical is None:
                index = BM25Index.load(self.lexical_path)
                if index.generation != self.manifest.generation:
                    index = self._rebuild_lexical()
                self._lexical = index
            return self._lexical

    def _rebuild_lexical(self) -> BM25Index:
        index = BM25Index()
        wanted = self.manifest.chunk_ids()
        index.add([c for c in self.store.get() if c.id in wanted])
        index.save(self.lexical_path, self.manifest.generation)
        return index

    # -- manifest ---------------------------------------------------------------------------
    def _read_manifest(self) -> Manifest:
        if not self.manifest_path.exists():
            return Manifest()
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"index manifest {self.manifest_path} is unreadable: {exc}") from exc
        return Manifest.from_json(data)

    def commit_manifest(self, manifest: Manifest) -> None:
        """Atomically replace manifest.json (temp file, fsync, rename)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest.to_json(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.manifest_path)
        self.manifest = manifest

    # -- write safety -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, wait: bool) -> Iterator[bool]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "ingest.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive write section: a lock against concurrent ingests and the dirty marker."""
        with self._locked(wait=False) as locked:
            if not locked:
                raise StoreError(f"another ingest is writing to {self.data_dir}; try again later")
            if self.dirty_path.exists():
                self.reconcile()
            self.dirty_path.touch()
            yield
            self.dirty_path.unlink(missing_ok=True)

    def reconcile(self) -> int:
        """Delete chunks that the manifest does not list (left by a killed ingest)."""
        wanted = self.manifest.chunk_ids()
        orphans = sorted(self.store.ids() - wanted)
        self.store.delete(orphans)
        token_orphans = sorted(self.tokens.ids() - wanted)
        self.tokens.delete(token_orphans)
        self._lexical = self._rebuild_lexical()
        self.dirty_path.unlink(missing_ok=True)
        return len(orphans)

    def remove_chunks(self, ids: list[str]) -> None:
        """Delete chunks from all three stores."""
        self.store.delete(ids)
        self.tokens.delete(ids)
        self.lexical.remove(ids)
