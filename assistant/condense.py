"""Turn a follow-up plus history into a standalone query, as chat-langchain's condense step does.

A 135M model cannot be trusted to rephrase, so the rule is deterministic: a question that reads
as a follow-up ("and what about rollbacks?", "why is that?") is searched together with the
previous user question; a self-contained question is searched alone.
"""

from __future__ import annotations

import re

from assistant.types import Turn

_FOLLOW_UP = re.compile(
    r"^\s*(and|but|also|so|then|ok(ay)?|what about|how about|what if|why|and why|same for|"
    r"what else|anything else|in that case|for that|for them|for those)\b"
    r"|\b(it|that|this|they|them|those|these|the same|there|its|their|instead|either|both)\b",
    re.IGNORECASE,
)


def is_follow_up(question: str) -> bool:
    """Whether a question leans on earlier turns."""
    return len(question.split()) <= 14 and bool(_FOLLOW_UP.search(question))


class Condenser:
    """``condenser(question, history) -> standalone query``."""

    @classmethod
    def from_config(cls) -> Condenser:
        return cls()

    def __call__(self, question: str, history: list[Turn]) -> str:
        previous = [t.content for t in history if t.role == "user"]
        if not previous or not is_follow_up(question):
            return question
        return f"{question} (context: {previous[-1]})"
