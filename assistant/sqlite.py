"""One SQLite connection per thread, WAL mode, schema created on open."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from assistant.errors import StoreError


class LocalSQLite:
    """Thread-local connections to one database file; ``what`` names it in error messages."""

    def __init__(self, path: Path, what: str, schema: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.what = what
        self._local = threading.local()
        with self.conn() as conn:
            for statement in schema:
                conn.execute(statement)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.what} {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn
