"""Is a question covered by the indexed material? Decides when ServeWise declines.

Three rules, calibrated on ``eval/datasets/dev.yaml`` (see README):

1. prompt-injection phrasing ("ignore your instructions", "system prompt") is declined;
2. a question about another named tool (Istio, Kafka, SageMaker, Seldon, ...) that names neither
   KServe nor Ray is declined: the material does not cover those tools;
3. otherwise the best dense similarity of the retrieved passages must reach a threshold, a
   higher one when the question has no serving vocabulary at all.
"""

from __future__ import annotations

import re

from assistant.config import DecisionSettings
from assistant.lexical import stem
from assistant.types import ScoredChunk

_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override) (all |any |your |the |previous |prior |above |earlier )*"
    r"(instructions|rules|prompts?|guidelines|directions)\b|\bsystem prompt\b|\byou are now\b|\bjailbreak",
    re.IGNORECASE,
)


def words(text: str) -> set[str]:
    """Lower-cased, stemmed words (identifiers are not split, so ``SageMaker`` is one word)."""
    return {stem(w) for w in re.findall(r"[a-z0-9]+", text.lower())}


DOMAIN = frozenset(
    words(
        "kserve ray serve serving model models inference deploy deployment kubernetes k8s gpu gpus "
        "autoscaling autoscaler replica replicas canary rollout rollback endpoint llm vllm pipeline "
        "cluster crd manifest latency batch batching runtime knative kuberay rayservice raycluster "
        "inferenceservice servingruntime inferencegraph platform sre helm namespace pod container "
        "image tensor parallel scale traffic revision hpa kpa keda storage predictor transformer "
        "rerank retrieval rag multiplexing upgrade sklearn xgboost triton huggingface graph service "
        "services router routing route node nodes secret secrets onnx"
    )
)
CORE = frozenset(
    words(
        "kserve ray kuberay rayservice raycluster rayjob inferenceservice "
        "servingruntime inferencegraph knative"
    )
)
FOREIGN = frozenset(
    words(
        "istio linkerd kafka sagemaker seldon bentoml vertex azureml databricks mlflow airflow spark "
        "flink terraform jenkins alertmanager pagerduty openshift lambda cloudrun modal replicate"
    )
)


class ScopeCheck:
    """``check(question, standalone, hits) -> reason`` ('' when the material covers it)."""

    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings

    def __call__(self, question: str, standalone: str, hits: list[ScoredChunk]) -> str:
        if _INJECTION.search(question):
            return "instructions inside the question are not followed"
        terms = words(standalone)
        if terms & FOREIGN and not terms & CORE:
            return "the question is about a tool the indexed material does not cover"
        best = max((h.stages.get("dense", 0.0) for h in hits), default=0.0)
        threshold = self.settings.decline_similarity
        if not terms & DOMAIN:
            threshold = self.settings.decline_similarity_no_domain
        return "" if best >= threshold else f"no indexed passage is close enough ({best:.2f} < {threshold})"
