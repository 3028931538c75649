"""The answer pipeline: condense -> retrieve -> rerank -> decide -> prompt -> generate -> verify.

``Assistant`` is called in-process by the CLI, the eval harness and the tests; ``serve/`` wraps
its stages in deployments. The language model only writes prose around a decision that the
scorer already grounded; the verifier makes sure whatever it wrote is cited or replaced.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.condense import Condenser
from assistant.config import Settings
from assistant.conversations import Conversations
from assistant.decider import Decider, Decision
from assistant.embedder import Embedder, SentenceTransformerEmbedder
from assistant.errors import InputError, InputTooLargeError
from assistant.generator import GenerationParams, Generator, build_generator
from assistant.prompt import Source, build_messages, build_sources
from assistant.retriever import MAX_QUERY_CHARS, Query
from assistant.scope import ScopeCheck
from assistant.search import AsyncSearcher, Searcher
from assistant.types import Answer, Turn
from assistant.verifier import Verifier

DECLINE_TEXT = (
    "The indexed material does not cover this question. ServeWise answers questions about choosing "
    "and running KServe or Ray Serve, and about the cluster manifests you have indexed."
)


def validate_question(question: str, limit: int) -> str:
    """The stripped question, or an :class:`InputError` saying what is wrong with it."""
    question = (question or "").strip()
    if not question:
        raise InputError("the question is empty")
    if len(question) > limit:
        raise InputTooLargeError(f"the question is {len(question)} characters; the limit is {limit}")
    return question


@dataclass
class Prepared:
    """Everything decided before generation starts."""

    question: str
    conversation_id: str
    history: list[Turn]
    query: str = ""
    decision: Decision | None = None
    sources: list[Source] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    declined: bool = False
    decline_reason: str = ""
    started: float = field(default_factory=time.perf_counter)


class Assistant:
    """``await assistant(question) -> Answer``; ``assistant.stream(question)`` yields events."""

    def __init__(
        self,
        settings: Settings,
        searcher: AsyncSearcher,
        generator: Generator,
        conversations: Conversations,
    ) -> None:
        self.settings = settings
        self.searcher = searcher
        self.generator = generator
        self.conversations = conversations
        self.condenser = Condenser()
        self.decider = Decider.from_config(settings.decision)
        self.verifier = Verifier(settings.answer.min_words)
        self.scope = ScopeCheck(settings.decision)

    @classmethod
    def from_config(
        cls, settings: Settings, embedder: Embedder | None = None, generator: Generator | None = None
    ) -> Assistant:
        """Open the index, the conversation store and the generator named in settings."""
        embedder = embedder or SentenceTransformerEmbedder.from_config(settings.embedder)
        searcher = Searcher.from_config(settings, embedder)
        conversations = Conversations(Path(settings.data_dir) / "conversations.sqlite")
        return cls(settings, searcher, generator or build_generator(settings), conversations)

    async def __call__(
        self, question: str, conversation_id: str | None = None, history: list[Turn] | None = None
    ) -> Answer:
        answer = None
        async for event in self.stream(question, conversation_id, history):
            if event["type"] == "answer":
                answer = event["answer"]
        assert answer is not None
        return answer

    async def stream(
        self, question: str, conversation_id: str | None = None, history: list[Turn] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``token`` events (``text``), a ``replaced`` event (``reason``) when the model's text
        failed verification, then one ``answer`` event carrying the :class:`Answer` and, under
        ``retrieved``, the passages it was built from (``ScoredChunk.as_dict``; empty when declined)."""
        prep = await self.prepare(question, conversation_id, history)
        if prep.declined:
            answer = self._finish(prep, DECLINE_TEXT, [], declined=True)
            yield {"type": "answer", "answer": answer, "retrieved": []}
            return
        shown = prep.sources[: self.settings.answer.prompt_sources]
        messages = build_messages(
            prep.question, shown, prep.decision, prep.history, self.settings.answer.prompt_source_chars
        )
        params = GenerationParams.from_settings(self.settings.generator)
        parts: list[str] = []
        gen_start = time.perf_counter()
        async for token in self.generator.stream(messages, params):
            if not parts:
                prep.timings["first_token_ms"] = (time.perf_counter() - prep.started) * 1000
            parts.append(token)
            yield {"type": "token", "text": token}
        prep.timings["generate_ms"] = (time.perf_counter() - gen_start) * 1000
        verified = self.verifier(
            "".join(parts), prep.sources, prep.decision, shown=len(shown), question=prep.query
        )
        if verified.composed:
            yield {"type": "replaced", "reason": verified.problem}
        yield {
            "type": "answer",
            "answer": self._finish(prep, verified.text, verified.citations, composed=verified.composed),
            "retrieved": [source.hit.as_dict() for source in prep.sources],
        }

    async def prepare(
        self, question: str, conversation_id: str | None, history: list[Turn] | None
    ) -> Prepared:
        """Validate, condense, retrieve, rerank, decide; mark off-topic questions declined."""
        prep = self._begin(question, conversation_id, history)
        standalone = self.condenser(prep.question, prep.history)[:MAX_QUERY_CHARS]
        prep.query = standalone
        result = await self.searcher.asearch(Query.parse(standalone), self.settings.answer.sources)
        prep.timings.update(result.query.timings)
        prep.decline_reason = self.scope(prep.question, standalone, result.hits)
        prep.declined = bool(prep.decline_reason)
        if not prep.declined:
            prep.sources = build_sources(result.hits, standalone)
            prep.decision = self.decider(prep.question, standalone, result.hits)
        return prep

    def _begin(self, question: str, conversation_id: str | None, history: list[Turn] | None) -> Prepared:
        question = self._validate(question)
        cid = self.conversations.require(conversation_id) if conversation_id else self.conversations.create()
        if history is None:
            history = self.conversations.history(cid, self.settings.answer.max_history_turns)
        return Prepared(question, cid, history[-self.settings.answer.max_history_turns :])

    def _validate(self, question: str) -> str:
        return validate_question(question, self.settings.answer.max_question_chars)

    def _finish(
        self, prep: Prepared, text: str, citations: list, declined: bool = False, composed: bool = False
    ) -> Answer:
        prep.timings["total_ms"] = (time.perf_counter() - prep.started) * 1000
        prep.timings.setdefault("generate_ms", 0.0)
        decision = prep.decision
        answer = Answer(
            answer=text,
            recommendation=None if declined or decision is None else decision.recommendation,
            confidence=0.0 if declined or decision is None else decision.confidence,
            declined=declined,
            citations=[] if declined else citations,
            timings={k: round(v, 1) for k, v in prep.timings.items()},
            model=self.generator.name + (" (composed)" if composed else ""),
            conversation_id=prep.conversation_id,
        )
        self.conversations.append(
            prep.conversation_id,
            [Turn(role="user", content=prep.question), Turn(role="assistant", content=text)],
        )
        return answer
