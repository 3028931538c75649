"""Per-chunk token embeddings for late-interaction (MaxSim) reranking.

Computed in the same forward pass as the chunk's dense vector at ingest, so reranking needs no
model call per candidate. Stored compactly in SQLite: adjacent tokens are mean-pooled in pairs
and each vector is quantized to int8 with a float16 scale (about 200 bytes per token).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assistant.sqlite import LocalSQLite

POOL = 2


def compress(tokens: np.ndarray, pool: int = POOL) -> tuple[bytes, bytes, int]:
    """Pool, renormalise and int8-quantize a (t, dim) matrix; returns (data, scales, rows)."""
    t, dim = tokens.shape
    if pool > 1 and t > 1:
        pad = (-t) % pool
        padded = np.vstack([tokens, np.repeat(tokens[-1:], pad, axis=0)]) if pad else tokens
        tokens = padded.reshape(-1, pool, dim).mean(axis=1)
    tokens = tokens / np.linalg.norm(tokens, axis=1, keepdims=True).clip(min=1e-12)
    scale = np.abs(tokens).max(axis=1, keepdims=True).clip(min=1e-12) / 127.0
    q = np.round(tokens / scale).astype(np.int8)
    return q.tobytes(), scale.astype(np.float16).tobytes(), len(q)


def decompress(data: bytes, scales: bytes, rows: int) -> np.ndarray:
    """Inverse of :func:`compress` (up to quantization error)."""
    q = np.frombuffer(data, dtype=np.int8).reshape(rows, -1).astype(np.float32)
    return q * np.frombuffer(scales, dtype=np.float16).astype(np.float32)[:, None]


class TokenStore:
    """chunk id -> compressed token matrix, in ``data_dir/tokens.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.db = LocalSQLite(
            path,
            "token store",
            ["CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, rows INTEGER, scales BLOB, data BLOB)"],
        )
        self._conn = self.db.conn

    def put(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Store token matrices (replacing existing ids) in one transaction."""
        rows = []
        for chunk_id, tokens in items:
            data, scales, n = compress(tokens)
            rows.append((chunk_id, n, scales, data))
        with self._conn() as conn:
            conn.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?)", rows)

    def get(self, ids: list[str]) -> dict[str, np.ndarray]:
        """Token matrices for the ids that have them."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        cur = self._conn().execute(f"SELECT id, rows, scales, data FROM tokens WHERE id IN ({marks})", ids)
        return {i: decompress(d, s, n) for i, n, s, d in cur}

    def delete(self, ids: list[str]) -> None:
        """Remove ids (missing ones are ignored)."""
        with self._conn() as conn:
            conn.executemany("DELETE FROM tokens WHERE id = ?", [(i,) for i in ids])

    def ids(self) -> set[str]:
        """Every stored id."""
        return {r[0] for r in self._conn().execute("SELECT id FROM tokens")}
