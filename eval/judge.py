"""Judge-based metrics, run only when ``eval.judge.base_url`` names an OpenAI-compatible model.

* **faithfulness**: the judge lists the answer's factual claims and marks each as supported or not by
  the passages the answer was built from; the item's score is the supported share (ragas-style).
* **relevance**: the judge rates from 1 to 5 how directly and completely the answer addresses the
  question; the score is ``(rating - 1) / 4``.

Declined answers are not judged. A reply that is not the requested JSON counts as ``unparsed`` and is
left out of the mean. Never part of CI: a judge is a model call per item and per metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from assistant.config import GeneratorSettings, JudgeSettings
from assistant.generator import GenerationParams, Generator, complete
from eval.metrics import metric

SYSTEM = "You grade answers written by a retrieval assistant. Reply with one JSON object and nothing else."

FAITHFULNESS = """Passages the answer was written from:
{sources}

Answer to grade:
{answer}

Break the answer into its factual claims. For each claim decide whether the passages state or clearly
imply it. Reply as {{"claims": [{{"claim": "...", "supported": true}}]}}."""

RELEVANCE = """Question: {question}

Answer: {answer}

How directly and completely does the answer address the question? Reply as {{"rating": N}}, where N is
1 (not at all), 2, 3, 4 or 5 (fully)."""

OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class Judge:
    """Scores one answer with a grading model."""

    def __init__(self, generator: Generator, max_tokens: int = 300, source_chars: int = 600) -> None:
        self.generator = generator
        self.params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
        self.source_chars = source_chars

    @classmethod
    def from_config(cls, settings: JudgeSettings) -> Judge | None:
        """A judge over ``settings.base_url``, or None when no judge is configured."""
        if not settings.base_url:
            return None
        from assistant.openai_generator import OpenAICompatibleGenerator

        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        generator_settings = GeneratorSettings(
            kind="openai",
            base_url=settings.base_url,
            model=settings.model or None,
            api_key=api_key,
            timeout_s=settings.timeout_s,
        )
        return cls(OpenAICompatibleGenerator.from_config(generator_settings), settings.max_tokens)

    async def __call__(self, question: str, answer: str, passages: Sequence[dict[str, Any]]) -> dict:
        """``{"faithfulness": float | None, "relevance": float | None}`` (None: reply unparsed)."""
        sources = "\n".join(
            f"[{n}] {str(p.get('text', ''))[: self.source_chars]}" for n, p in enumerate(passages, 1)
        )
        faithful = await self._ask(FAITHFULNESS.format(sources=sources or "(none)", answer=answer))
        relevant = await self._ask(RELEVANCE.format(question=question, answer=answer))
        return {"faithfulness": faithfulness_score(faithful), "relevance": relevance_score(relevant)}

    async def _ask(self, prompt: str) -> dict | None:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        return parse_object(await complete(self.generator, messages, self.params))

    async def close(self) -> None:
        await self.generator.close()


def parse_object(text: str) -> dict | None:
    """The first JSON object in a reply (models wrap JSON in prose or fences), else None."""
    match = OBJECT.search(text or "")
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def faithfulness_score(reply: dict | None) -> float | None:
    """Supported claims / claims; None when the reply lists no well-formed claims."""
    claims = reply.get("claims") if reply else None
    if not isinstance(claims, list):
        return None
    marks = [c.get("supported") for c in claims if isinstance(c, dict)]
    marks = [m for m in marks if isinstance(m, bool)]
    return sum(marks) / len(marks) if marks else None


def relevance_score(reply: dict | None) -> float | None:
    """``(rating - 1) / 4`` for a rating from 1 to 5; None otherwise."""
    rating = reply.get("rating") if reply else None
    if isinstance(rating, bool) or not isinstance(rating, int | float) or not 1 <= rating <= 5:
        return None
    return (float(rating) - 1) / 4


def summarize(scores: Sequence[dict]) -> dict[str, Any]:
    """Means over the judged items, with how many replies could not be read."""
    out: dict[str, Any] = {}
    for key in ("faithfulness", "relevance"):
        values = [s[key] for s in scores if s.get(key) is not None]
        out[key] = {**metric(values), "unparsed": sum(1 for s in scores if s.get(key) is None)}
    return out
