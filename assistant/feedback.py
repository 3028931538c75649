"""Thumbs up/down on answers, in ``data_dir/feedback.sqlite``, exportable as evaluation items.

Feedback names a stored conversation; the rated turn (question and answer) and the turns before it
are copied from the conversation store when the rating is recorded, so an export stays the same
however the conversation goes on. :meth:`FeedbackStore.export_items` turns the latest rating of
each question into an item shaped like ``eval/datasets/dev.yaml`` (a thumbs-up proposes gold
labels from the answer, for a reviewer to check; a thumbs-down leaves them to the reviewer).

Calls are small and synchronous, like :class:`~assistant.conversations.Conversations`; each
thread gets its own SQLite connection, so async code may call them from a thread pool.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from assistant.config import Settings
from assistant.conversations import Conversations
from assistant.errors import InputError, InputTooLargeError
from assistant.sqlite import LocalSQLite
from assistant.types import Answer, Turn

Rating = Literal["up", "down"]
RATINGS: tuple[str, ...] = ("up", "down")
FEEDBACK_FILE = "feedback.sqlite"
MAX_COMMENT_CHARS = 2000
MAX_TURNS = 10_000  # every turn of a conversation, for finding the rated answer
SOURCE = re.compile(r"[a-z0-9_-]{1,32}")
#: Criterion ids look like ``fit/ray-serve-existing-ray``: not ``Kind/name`` manifest refs
#: (uppercase kind) nor platform-doc sections (``kserve/canary-rollout#promote-or-roll-back``).
CRITERION_ID = re.compile(r"[a-z0-9-]+/[a-z0-9-]+")
REVIEW_PROPOSED = "proposed labels from a thumbs-up; check before adding to a dataset"
REVIEW_DOWN = "thumbs-down: write the gold labels"
REVIEW_NO_ANSWER = "thumbs-up without the answer JSON: write the gold labels"
COLUMNS = "id, conversation_id, rating, comment, at, question, history, answer_text, answer, source"
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, "
    "conversation_id TEXT, rating TEXT, comment TEXT, at REAL, question TEXT, history TEXT, "
    "answer_text TEXT, answer TEXT, source TEXT)",
    "CREATE INDEX IF NOT EXISTS feedback_at ON feedback (at)",
]


@dataclass(frozen=True, slots=True)
class Feedback:
    """One recorded rating and the turn it rates (``answer`` is the Answer JSON, when sent)."""

    id: str
    conversation_id: str
    rating: Rating
    comment: str
    at: datetime
    question: str
    history: list[Turn]
    answer_text: str
    answer: Answer | None
    source: str

    @property
    def item_id(self) -> str:
        """``fb-`` + a short hash of conversation and question: the same question rated again
        in the same conversation is the same item."""
        digest = hashlib.sha1(f"{self.conversation_id}\0{self.question}".encode()).hexdigest()
        return f"fb-{digest[:12]}"

    def as_item(self) -> dict[str, Any]:
        """The evaluation dataset item (see the module docstring)."""
        labels, review = self._labels()
        return {
            "id": self.item_id,
            "question": self.question,
            "history": [turn.model_dump() for turn in self.history],
            **labels,
            "source": "feedback",
            "review": review,
            "feedback": {
                "rating": self.rating,
                "comment": self.comment,
                "at": iso(self.at),
                "answer_text": self.answer_text,
                "recommendation": self.answer.recommendation if self.answer else None,
                "cited": [c.id for c in self.answer.citations] if self.answer else [],
            },
        }

    def _labels(self) -> tuple[dict[str, Any], str]:
        if self.rating == "down":
            return {}, REVIEW_DOWN
        if self.answer is None:
            return {}, REVIEW_NO_ANSWER
        cited = [c.id for c in self.answer.citations]
        labels = {
            "platform": self.answer.recommendation or "none",
            "criteria": list(dict.fromkeys(i for i in cited if CRITERION_ID.fullmatch(i))),
            "scope": "out" if self.answer.declined else "in",
        }
        return labels, REVIEW_PROPOSED


class FeedbackStore:
    """Record ratings, find them, export them as evaluation items."""

    def __init__(
        self,
        path: Path,
        conversations: Conversations,
        history_turns: int = 6,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = LocalSQLite(path, "feedback store", SCHEMA)
        self._conn = self.db.conn
        self.conversations = conversations
        self.history_turns = history_turns
        self.clock = clock

    @classmethod
    def from_config(cls, settings: Settings) -> FeedbackStore:
        """The store in the data dir, over the conversation store the pipeline writes."""
        data_dir = Path(settings.data_dir)
        conversations = Conversations(data_dir / "conversations.sqlite")
        return cls(data_dir / FEEDBACK_FILE, conversations, settings.answer.max_history_turns)

    def record(
        self,
        conversation_id: str,
        rating: Rating,
        comment: str = "",
        answer: Answer | dict[str, Any] | None = None,
        source: str = "api",
    ) -> Feedback:
        """Store a rating of the conversation's latest answer, or of the answer given (matched by
        its text). Unknown conversation: :class:`NotFoundError`; bad input: :class:`InputError`."""
        rated = _answer(answer)
        _check(rating, comment, source)
        history, question, reply = self._rated_turn(conversation_id, rated)
        fb = Feedback(
            id=uuid.uuid4().hex,
            conversation_id=conversation_id,
            rating=rating,
            comment=comment.strip(),
            at=datetime.fromtimestamp(self.clock(), UTC),
            question=question.content,
            history=history,
            answer_text=reply.content,
            answer=rated,
            source=source,
        )
        self._insert(fb)
        return fb

    def find(self, rating: Rating | None = None, since: date | None = None) -> list[Feedback]:
        """Every rating (optionally only ``up`` or ``down``, at or after ``since``), oldest first."""
        if rating is not None:
            _check(rating)
        rows = self._conn().execute(
            f"SELECT {COLUMNS} FROM feedback WHERE (? IS NULL OR rating = ?) AND at >= ? ORDER BY at, seq",
            (rating, rating, _epoch(since)),
        )
        return [_from_row(row) for row in rows]

    def export_items(self, rating: Rating | None = None, since: date | None = None) -> list[dict[str, Any]]:
        """One item per question rated (its latest rating wins), then filtered; oldest first."""
        if rating is not None:
            _check(rating)
        latest: dict[str, Feedback] = {}
        for fb in self.find():
            latest.pop(fb.item_id, None)  # re-insert: dict order becomes the latest rating's order
            latest[fb.item_id] = fb
        start = datetime.fromtimestamp(_epoch(since), UTC)
        return [
            fb.as_item()
            for fb in latest.values()
            if (rating is None or fb.rating == rating) and fb.at >= start
        ]

    def _rated_turn(self, cid: str, answer: Answer | None) -> tuple[list[Turn], Turn, Turn]:
        """(earlier turns, question, answer) of the rated exchange."""
        turns = self.conversations.history(self.conversations.require(cid), MAX_TURNS)
        pairs = pairwise(turns)
        ends = [i for i, (q, a) in enumerate(pairs, 1) if (q.role, a.role) == ("user", "assistant")]
        if answer is not None:
            if answer.conversation_id and answer.conversation_id != cid:
                raise InputError(f"answer.conversation_id {answer.conversation_id!r} is not {cid!r}")
            ends = [i for i in ends if turns[i].content == answer.answer]
            if not ends:
                raise InputError(f"the answer's text is not an answer of conversation {cid!r}")
        if not ends:
            raise InputError(f"conversation {cid!r} has no answered question to rate yet")
        end = ends[-1]
        earlier = turns[: end - 1][-self.history_turns :] if self.history_turns else []
        return earlier, turns[end - 1], turns[end]

    def _insert(self, fb: Feedback) -> None:
        history = json.dumps([t.model_dump() for t in fb.history], ensure_ascii=False)
        answer = fb.answer.model_dump_json() if fb.answer else None
        values = (fb.id, fb.conversation_id, fb.rating, fb.comment, fb.at.timestamp())
        values += (fb.question, history, fb.answer_text, answer, fb.source)
        with self._conn() as conn:
            conn.execute(f"INSERT INTO feedback ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)


def _check(rating: str, comment: str = "", source: str = "api") -> None:
    """An :class:`InputError` naming what is wrong with a rating, comment or source."""
    if rating not in RATINGS:
        raise InputError(f"rating must be 'up' or 'down', not {rating!r}")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InputTooLargeError(
            f"the comment is {len(comment)} characters; the limit is {MAX_COMMENT_CHARS}"
        )
    if not SOURCE.fullmatch(source):
        raise InputError(f"source must be 1-32 of a-z, 0-9, '_' or '-', not {source!r}")


def _answer(answer: Answer | dict[str, Any] | None) -> Answer | None:
    """The Answer JSON as an :class:`Answer` (an :class:`InputError` when it is not one)."""
    if answer is None or isinstance(answer, Answer):
        return answer
    try:
        return Answer.model_validate(answer)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"answer is not an Answer JSON: {problems}") from exc


def _from_row(row: tuple) -> Feedback:
    fid, cid, rating, comment, at, question, history, answer_text, answer, source = row
    return Feedback(
        id=fid,
        conversation_id=cid,
        rating=rating,
        comment=comment,
        at=datetime.fromtimestamp(at, UTC),
        question=question,
        history=[Turn.model_validate(t) for t in json.loads(history)],
        answer_text=answer_text,
        answer=Answer.model_validate_json(answer) if answer else None,
        source=source,
    )


def _epoch(since: date | None) -> float:
    """Seconds since the epoch: a date is its midnight UTC, a naive datetime is taken as UTC."""
    if since is None:
        return 0.0
    if not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day)
    return (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()


def iso(at: datetime) -> str:
    """``2025-01-31T12:00:00Z``."""
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dump_items(items: list[dict[str, Any]], fmt: Literal["jsonl", "yaml"]) -> str:
    """Items as JSON lines, or as YAML ``items:`` like ``eval/datasets/dev.yaml``."""
    if fmt == "jsonl":
        return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    header = f"# ServeWise feedback export ({len(items)} item(s)); review every label before use.\n"
    return header + yaml.safe_dump({"items": items}, sort_keys=False, allow_unicode=True, width=100)
