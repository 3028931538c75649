"""The recommendation: an explainable scorer, never the language model.

Evidence for each platform comes from two places:

- the reranked **criteria** (only ``source_type == "criterion"``, so text inside documents or
  manifests cannot sway it): a criterion that favours a platform adds its rank weight, more
  when the question matches the criterion's own signal phrases;
- the **question's signals**: phrases such as "already run on Ray" or "many teams, one API".

A pick is made only when the question asks for one and one side clearly leads; comparison,
fact and trade-off questions, and balanced evidence, get no pick.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from assistant.config import DecisionSettings
from assistant.lexical import tokenize
from assistant.types import ScoredChunk

SIDES = ("kserve", "ray-serve")
NAMES = {"kserve": "KServe", "ray-serve": "Ray Serve"}

_CHOICE = (
    r"(platform|option|tool|framework|approach|stack|base|one|system|choice|layer|way to serve)(?! team)"
)
_RECOMMEND = re.compile(
    r"\b(which|what)('s| is| are)? (\w+ ){0,2}" + _CHOICE + r"\b"
    r"|\b(which|what|where) (\w+ ){0,2}(should|would) (\w+ ){0,2}(use|serve|serving|run|live|host|"
    r"pick|choose|go|adopt)\b"
    r"|\b(which|what) (\w+ ){0,2}(fits?|suits?|is (the )?better|is best)\b"
    r"|\bshould (we|i|they|our \w+|the \w+|my \w+) (use|pick|choose|go|adopt|run|serve|standardi[sz]e|"
    r"build|move|migrate|switch|deploy|stick|start|bet|invest|put|add|keep)\b"
    r"|\b(recommend|suggest|go with|better (fit|choice|option|suited|base)|best (fit|option|choice)|"
    r"right (choice|platform|tool)|makes? (more )?sense|lean (towards?|to)|decide between|"
    r"or should|something else|is there a better|kserve or ray|ray serve or kserve)\b",
    re.IGNORECASE,
)
_COMPARE = re.compile(
    r"\b(compare|comparison|differences?|differ|versus|trade-?offs?|pros and cons|"
    r"strengths|weaknesses|how do (they|the two|kserve and ray serve) (compare|differ))\b",
    re.IGNORECASE,
)

#: Question phrases that point at a platform (regex, weight).
QUESTION_SIGNALS: dict[str, list[tuple[str, float]]] = {
    "ray-serve": [
        (r"\b(already|all|everything|our \w+) (\w+ ){0,4}(on|in|with|uses?|using) (ray|kuberay)\b", 2.0),
        (r"\b(ray (cluster|jobs?|data|train|tune|core|actors?)|rayjobs?|kuberay is)\b", 1.0),
        (r"\b(rag|retrieval|rerank\w*|retriever|vector (store|search|db)|embed\w*)\b", 1.0),
        (r"\b(multi-?step|pipeline|chain of|dag|serving graph|composition|compose|agents?|loops?)\b", 1.0),
        (r"\b(python (code|logic|application|app|classes)|custom (python|logic|code)|glue code)\b", 1.0),
        (r"\b(ml|application|app|product) teams? (owns?|writes?|wants?|maintains?|carr\w+)\b", 1.0),
        (r"\b(pre-?(and post-?)?processing|post-?processing|routing logic|orchestrat\w+|router)\b", 1.0),
        (r"\b(shared state|state shared|stateful|per-\w+ state|conversation state|keeps? state)\b", 1.0),
        (r"\b(getting in the way|too rigid|one more hook|keeps growing|outgrow\w*|every sprint)\b", 1.5),
        (r"\b(fraction(al)? of a gpu|multiplex\w*|many small models|per-model batching)\b", 1.0),
        (r"\b(two models|several models|combine\w*|business rules|feature lookups?)\b", 1.0),
        (r"\b(keep asking|file (platform )?tickets|waiting on the platform)\b", 1.5),
    ],
    "kserve": [
        (
            r"\b(many|dozens of|several|lots of|multiple|all our|hundreds of|\d+) (\w+ ){0,2}"
            r"(teams|business units|departments|product groups)\b",
            1.5,
        ),
        (r"\bplatform team\b", 1.0),
        (
            r"\b(one|single|consistent|standard(ized|ised)?|uniform|common|managed) (\w+ ){0,2}"
            r"(api|endpoint|interface|contract|path|product)\b",
            1.5,
        ),
        (
            r"\b(gitops|argo ?cd|flux|policy|policies|governance|governed|audit\w*|compliance|kyverno|"
            r"admission controller|approv\w+)\b",
            1.0,
        ),
        (
            r"\b(crds?|custom resources?|kubernetes[- ]native|kubernetes resources|yaml manifests?|"
            r"kubectl)\b",
            1.0,
        ),
        (r"\b(revisions?|canary|traffic split\w*|scale[- ]to[- ]zero|knative)\b", 0.5),
        (r"\b(standard|plain|simple|single|tabular|predictive)[- ](model )?(endpoints?|models?)\b", 1.0),
        (r"\b(sklearn|xgboost|scikit|tensorflow|onnx|triton|torchserve)\b", 0.5),
        (r"\b(no|nobody|not|don't|do not|without|lack\w*|no one)\b[^.?!]{0,40}\b(ray|kuberay)\b", 3.0),
    ],
}


@dataclass
class Decision:
    """The recommendation, how sure it is, why, and the criteria that decided it."""

    recommendation: str | None
    confidence: float
    intent: str  # recommend | compare | question
    scores: dict[str, float]
    reason: str
    deciding: list[ScoredChunk] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the prompt and for logs."""
        if not self.recommendation:
            return f"No platform pick: {self.reason}."
        titles = "; ".join(c.chunk.title for c in self.deciding)
        return f"Recommend {NAMES[self.recommendation]} ({self.reason}). Deciding criteria: {titles}."


def intent_of(question: str) -> str:
    """``recommend`` when the question asks for a pick, ``compare`` for comparisons, else ``question``."""
    if _RECOMMEND.search(question):
        return "recommend"
    return "compare" if _COMPARE.search(question) else "question"


def question_signals(question: str) -> dict[str, float]:
    """Weight of each platform's phrases found in the question."""
    return {
        side: sum(w for pattern, w in patterns if re.search(pattern, question, re.IGNORECASE))
        for side, patterns in QUESTION_SIGNALS.items()
    }


def signal_overlap(question_terms: set[str], phrases: list[str]) -> float:
    """Best share of a signal phrase's terms found in the question (0..1)."""
    best = 0.0
    for phrase in phrases:
        terms = set(tokenize(phrase))
        if terms:
            best = max(best, len(terms & question_terms) / len(terms))
    return best


class Decider:
    """``decider(question, hits) -> Decision``."""

    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, settings: DecisionSettings) -> Decider:
        return cls(settings)

    def __call__(self, question: str, standalone: str, hits: list[ScoredChunk]) -> Decision:
        """Decide for ``question`` (its intent) with the evidence of ``standalone`` (its context)."""
        intent = intent_of(question)
        scores, contributions = self._evidence(standalone, hits)
        total = scores["kserve"] + scores["ray-serve"]
        leader = max(SIDES, key=lambda s: scores[s])
        margin = abs(scores["kserve"] - scores["ray-serve"]) / total if total else 0.0
        if intent != "recommend":
            reason = "a comparison question" if intent == "compare" else "a factual question"
            return Decision(None, 0.0, intent, scores, reason)
        if total < self.settings.min_evidence or margin < self.settings.min_margin:
            return Decision(None, round(1 - margin, 2), intent, scores, "the evidence is balanced")
        confidence = round(min(0.95, 0.5 + 0.5 * margin * min(1.0, total / 3)), 2)
        deciding = [c for c, side in sorted(contributions, key=lambda x: -x[0].score) if side == leader]
        reason = f"{margin:.0%} of the weighted evidence margin favours {NAMES[leader]}"
        return Decision(leader, confidence, intent, scores, reason, deciding[:3])

    def _evidence(self, question: str, hits: list[ScoredChunk]):
        scores = question_signals(question)
        terms = set(tokenize(question))
        contributions: list[tuple[ScoredChunk, str]] = []
        criteria = [h for h in hits if h.chunk.source_type == "criterion"]
        for rank, hit in enumerate(criteria):
            weight = 1.0 / (1 + rank)
            signals = json.loads(str(hit.chunk.meta.get("signals") or "{}"))
            favours = str(hit.chunk.meta.get("favours", "neutral"))
            for side in SIDES:
                match = signal_overlap(terms, signals.get(side, []))
                boost = match if match >= self.settings.signal_match else 0.0
                add = weight * ((1.0 if favours == side else 0.0) + boost)
                if add > 0:
                    scores[side] += add
                    contributions.append((hit, side))
        return scores, contributions
