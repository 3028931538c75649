"""The vector store: ChromaDB, embedded in the data dir or a server reached over HTTP.

Embeddings are always computed by our own :class:`~assistant.embedder.Embedder` and passed in;
the collection is still given an embedding function that delegates to it, because Chroma's
default one would try to download a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from assistant.config import Settings
from assistant.embedder import Embedder
from assistant.errors import BackendMissingError, StoreError
from assistant.types import Chunk

_BATCH = 1000


def _embedding_function(embedder: Embedder | None) -> Any:
    from chromadb.api.types import EmbeddingFunction

    class _Delegate(EmbeddingFunction):
        def __init__(self) -> None:
            self.embedder = embedder

        def __call__(self, input: list[str]) -> list[np.ndarray]:
            if self.embedder is None:
                raise StoreError("no embedder configured for text queries")
            return list(self.embedder.embed_batch(list(input)))

        @staticmethod
        def name() -> str:
            return "servewise"

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> _Delegate:
            return _Delegate()

        def default_space(self) -> str:
            return "cosine"

    return _Delegate()


def where_clause(source_types: Iterable[str] = (), platforms: Iterable[str] = ()) -> dict | None:
    """Chroma metadata filter for the given source types and platforms (None: no filter)."""
    parts = []
    if types := list(source_types):
        parts.append({"source_type": {"$in": types}})
    if plats := list(platforms):
        parts.append({"platform": {"$in": plats}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


class VectorStore:
    """Chunks and their dense vectors in one Chroma collection (cosine space)."""

    def __init__(self, client: Any, collection: str, embedder: Embedder | None = None) -> None:
        self.client = client
        try:
            self.collection = client.get_or_create_collection(
                collection,
                embedding_function=_embedding_function(embedder),
                configuration={"hnsw": {"space": "cosine"}},
            )
        except Exception as exc:  # chromadb raises many types; all mean the store is unusable
            raise StoreError(f"cannot open Chroma collection '{collection}': {exc}") from exc

    @classmethod
    def from_config(cls, settings: Settings, embedder: Embedder | None = None) -> VectorStore:
        """Embedded PersistentClient under ``data_dir/chroma``, or HttpClient for a server URL."""
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings
        except ImportError as exc:
            raise BackendMissingError("The vector store", "chromadb") from exc
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        url = settings.store.chroma_url
        try:
            if url:
                parsed = urlparse(url)
                client = chromadb.HttpClient(
                    host=parsed.hostname or "127.0.0.1",
                    port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                    ssl=parsed.scheme == "https",
                    settings=chroma_settings,
                )
            else:
                path = Path(settings.data_dir) / "chroma"
                path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        except Exception as exc:
            where = url or settings.data_dir
            raise StoreError(f"cannot reach Chroma at {where}: {exc}") from exc
        return cls(client, settings.store.collection, embedder)

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Insert or replace chunks with their vectors."""
        for start in range(0, len(chunks), _BATCH):
            part = chunks[start : start + _BATCH]
            self._call(
                self.collection.upsert,
                ids=[c.id for c in part],
                documents=[c.text for c in part],
                metadatas=[c.metadata() for c in part],
                embeddings=vectors[start : start + _BATCH],
            )

    def delete(self, ids: list[str]) -> None:
        """Remove chunks by id (missing ids are ignored)."""
        for start in range(0, len(ids), _BATCH):
            self._call(self.collection.delete, ids=ids[start : start + _BATCH])

    def query(self, vector: np.ndarray, n: int, where: dict | None = None) -> list[tuple[str, float]]:
        """Ids of the nearest chunks to a vector with cosine similarity (1 - distance), best first.

        Only distances come back: callers fetch the few chunks they keep with :meth:`get`.
        """
        res = self._call(
            self.collection.query, query_embeddings=[vector], n_results=n, where=where, include=["distances"]
        )
        return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]

    def get(self, ids: list[str] | None = None) -> list[Chunk]:
        """Chunks by id (in no particular order), or every chunk when ``ids`` is None."""
        if ids is not None and not ids:
            return []
        res = self._call(self.collection.get, ids=ids, include=["documents", "metadatas"])
        return [
            Chunk.from_store(i, d, m)
            for i, d, m in zip(res["ids"], res["documents"], res["metadatas"], strict=True)
        ]

    def ids(self) -> set[str]:
        """Every chunk id in the collection."""
        return set(self._call(self.collection.get, include=[])["ids"])

    def count(self) -> int:
        """Number of chunks."""
        return int(self._call(self.collection.count))

    @staticmethod
    def _call(fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"Chroma {fn.__name__} failed: {exc}") from exc
