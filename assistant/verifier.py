"""Make every answer a user sees grounded.

The model's ``[n]`` markers are mapped back to the numbered sources; markers pointing at nothing
are removed; citations are renumbered in order of first use. A text that fails the checks (no
valid citation, repetition, drift away from the sources, too short, or contradicting the
decision) is replaced by an answer composed from the sources themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.decider import NAMES, Decision
from assistant.lexical import tokenize
from assistant.prompt import Source
from assistant.types import Citation

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SCAFFOLD = re.compile(r"^\s*(Question|Decision|Sources):", re.M)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*(])")


@dataclass(slots=True)
class Verified:
    """The text to show, its citations, and whether the model's text was replaced (and why)."""

    text: str
    citations: list[Citation]
    composed: bool
    problem: str = ""


def renumber(text: str, sources: list[Source]) -> tuple[str, list[Citation]]:
    """Keep markers that name a source, renumbered 1..m by first use; drop the others."""
    by_number = {s.number: s for s in sources}
    order: list[int] = []

    def sub(match: re.Match[str]) -> str:
        kept = []
        for raw in match.group(1).split(","):
            n = int(raw)
            if n in by_number:
                if n not in order:
                    order.append(n)
                kept.append(order.index(n) + 1)
        return "".join(f"[{k}]" for k in dict.fromkeys(kept))

    cleaned = _MARKER.sub(sub, text)
    cleaned = re.sub(r"[ \t]+([.,;:])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip()
    return cleaned, [by_number[n].citation for n in order]


def problem_with(
    text: str, citations: list[Citation], sources: list[Source], decision: Decision, min_words: int
) -> str:
    """Why the model's text cannot be shown, or '' when it passes."""
    words = text.split()
    if len(words) < min_words:
        return "too short"
    if not citations:
        return "no valid citation"
    if _SCAFFOLD.search(text):
        return "echoes the prompt"
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if trigrams and len(set(trigrams)) / len(trigrams) < 0.6:
        return "repetitive"
    answer_terms = set(tokenize(text))
    source_terms = set(tokenize(" ".join(s.citation.text for s in sources)))
    if answer_terms and len(answer_terms & source_terms) / len(answer_terms) < 0.35:
        return "drifts away from the sources"
    if decision.recommendation:
        other = NAMES[next(s for s in NAMES if s != decision.recommendation)]
        if re.search(rf"\b(recommend|choose|pick|go with|use)\w*\s+{re.escape(other)}", text, re.I):
            return "contradicts the decision"
    return ""


def first_sentences(text: str, n: int = 2, limit: int = 320) -> str:
    """The opening sentences of a passage body (its title line dropped)."""
    return focused_sentences(text, set(), n, limit)


def focused_sentences(text: str, terms: set[str], n: int = 2, limit: int = 420) -> str:
    """The opening sentence and the ``n - 1`` sentences sharing most ``terms``, in passage order."""
    body = text.split("\n\n", 1)[1] if "\n\n" in text else text
    body = " ".join(line.strip("-* ").strip() for line in body.splitlines() if line.strip())
    sentences = _SENTENCE.split(body)
    ranked = sorted(range(1, len(sentences)), key=lambda i: (-len(terms & set(tokenize(sentences[i]))), i))
    keep = sorted([0, *ranked[: n - 1]]) if terms else list(range(min(n, len(sentences))))
    picked = " ".join(sentences[i] for i in keep)
    return picked if len(picked) <= limit else picked[:limit].rsplit(" ", 1)[0] + " …"


def compose(sources: list[Source], decision: Decision, question: str = "") -> tuple[str, list[Citation]]:
    """An extractive answer: the decision, then what the top sources say about the question, cited."""
    terms = set(tokenize(question))
    deciding_ids = {c.chunk.id for c in decision.deciding}
    chosen = [s for s in sources if s.hit.chunk.id in deciding_ids] if decision.recommendation else []
    chosen += [s for s in sources if s not in chosen][: max(0, 3 - len(chosen))]
    lines = []
    if decision.recommendation:
        titles = "; ".join(
            f"{s.citation.title} [{i}]" for i, s in enumerate(chosen, 1) if s.hit.chunk.id in deciding_ids
        )
        lines.append(f"**Recommendation: {NAMES[decision.recommendation]}.** Deciding criteria: {titles}.")
    else:
        lines.append("Here is what the indexed material says:")
    for i, s in enumerate(chosen, 1):
        if s.hit.chunk.source_type == "manifest":
            detail = "; ".join(s.citation.text.splitlines()[1:5])
            lines.append(f"- {s.citation.title}: {detail} [{i}]")
        else:
            lines.append(f"- {s.citation.title}: {focused_sentences(s.citation.text, terms, 4, 600)} [{i}]")
    return "\n".join(lines), [s.citation for s in chosen]


def name_deciding(
    text: str, citations: list[Citation], sources: list[Source], decision: Decision
) -> tuple[str, list[Citation]]:
    """Make sure a recommending answer states the pick and names (and cites) its deciding criteria."""
    if NAMES[decision.recommendation] not in text:
        text = f"**Recommendation: {NAMES[decision.recommendation]}.** {text}"
    by_id = {s.hit.chunk.id: s.citation for s in sources}
    named = []
    for hit in decision.deciding:
        citation = by_id.get(hit.chunk.id)
        if citation is None:
            continue
        if citation not in citations:
            citations = [*citations, citation]
        named.append(f"{citation.title} [{citations.index(citation) + 1}]")
    if named:
        text = f"{text}\n\nDeciding criteria: {'; '.join(named)}."
    return text, citations


class Verifier:
    """``verifier(text, sources, decision) -> Verified``."""

    def __init__(self, min_words: int = 20) -> None:
        self.min_words = min_words

    def __call__(
        self,
        text: str,
        sources: list[Source],
        decision: Decision,
        shown: int | None = None,
        question: str = "",
    ) -> Verified:
        """Check ``text`` written from the first ``shown`` sources (all by default); a replacement
        answer quotes what the sources say about ``question``."""
        seen = sources[:shown] if shown else sources
        cleaned, citations = renumber(text, seen)
        problem = problem_with(cleaned, citations, seen, decision, self.min_words)
        if problem:
            composed, cites = compose(sources, decision, question)
            return Verified(composed, cites, True, problem)
        if decision.recommendation:
            cleaned, citations = name_deciding(cleaned, citations, sources, decision)
        return Verified(cleaned, citations, False)
