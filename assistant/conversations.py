"""Conversation history in ``data_dir/conversations.sqlite``, so follow-ups keep their context."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from assistant.errors import NotFoundError
from assistant.sqlite import LocalSQLite
from assistant.types import Turn


class Conversations:
    """Create conversations, append turns, read recent history."""

    def __init__(self, path: Path) -> None:
        self.db = LocalSQLite(
            path,
            "conversation store",
            [
                "CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, created REAL)",
                "CREATE TABLE IF NOT EXISTS turns (conversation_id TEXT, seq INTEGER, role TEXT, "
                "content TEXT, created REAL, PRIMARY KEY (conversation_id, seq))",
            ],
        )
        self._conn = self.db.conn

    def create(self) -> str:
        """Start a conversation; returns its id."""
        cid = uuid.uuid4().hex
        with self._conn() as conn:
            conn.execute("INSERT INTO conversations VALUES (?, ?)", (cid, time.time()))
        return cid

    def require(self, cid: str) -> str:
        """The id itself, or an :class:`NotFoundError` naming the unknown id."""
        row = self._conn().execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown conversation id {cid!r}; omit it to start a new conversation")
        return cid

    def history(self, cid: str, limit: int) -> list[Turn]:
        """The last ``limit`` turns, oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?",
                (cid, limit),
            )
            .fetchall()
        )
        return [Turn(role=r, content=c) for r, c in reversed(rows)]

    def append(self, cid: str, turns: list[Turn]) -> None:
        """Add turns at the end of a conversation."""
        with self._conn() as conn:
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM turns WHERE conversation_id = ?", (cid,)
            ).fetchone()
            conn.executemany(
                "INSERT INTO turns VALUES (?, ?, ?, ?, ?)",
                [(cid, seq + i, t.role, t.content, time.time()) for i, t in enumerate(turns, 1)],
            )
