"""Kubernetes manifests: one passage per object, a normalized summary with YAML field paths.

Handles multi-document files, ``kind: List`` (``kubectl get -o yaml``), KServe controller
placeholders (``{{.Name}}``), and the YAML string inside a RayService's ``serveConfigV2``.
Secrets and credential-looking env values are redacted before anything is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from assistant.errors import SkipSource
from assistant.ingest.redact import redact_object
from assistant.types import Passage

KIND_PLATFORM: dict[str, str] = {
    **dict.fromkeys(
        [
            "InferenceService",
            "ServingRuntime",
            "ClusterServingRuntime",
            "InferenceGraph",
            "TrainedModel",
            "LLMInferenceService",
            "LLMInferenceServiceConfig",
            "LocalModelCache",
            "LocalModelNodeGroup",
            "ClusterStorageContainer",
        ],
        "kserve",
    ),
    **dict.fromkeys(["RayService", "RayCluster", "RayJob"], "ray-serve"),
    **dict.fromkeys(
        [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "Service",
            "Pod",
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
            "HorizontalPodAutoscaler",
            "Job",
            "CronJob",
            "Namespace",
            "Ingress",
            "ServiceAccount",
            "ScaledObject",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ],
        "neutral",
    ),
}

MAX_EXPANDED_NODES = 200_000
_NOISE_META = ("managedFields", "uid", "resourceVersion", "creationTimestamp", "generation", "selfLink")
_TEMPLATE = re.compile(r"^(\s*(?:-\s+)?(?:[^\s#][^#\n]*?:\s+)?)(\{\{.*\}\})\s*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: (label, test on the field path, test on the value) in the order summaries list them.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("deployment mode", re.compile(r'deploymentMode"\]$|deploymentMode$')),
    ("gpu", re.compile(r'(gpu|tpu)"?\]?$|num_gpus$|accelerator_type$', re.IGNORECASE)),
    (
        "replicas",
        re.compile(
            r"(^|\.)(replicas|minReplicas|maxReplicas|num_replicas|min_replicas|"
            r"max_replicas|initial_replicas)$"
        ),
    ),
    (
        "autoscaling",
        re.compile(
            r"(scaleMetric|scaleTarget|target_ongoing_requests|"
            r"target_num_ongoing_requests_per_replica|containerConcurrency|"
            r"enableInTreeAutoscaling|upscale_delay_s|downscale_delay_s|"
            r"max_ongoing_requests|autoscaling\.knative\.dev/[a-z-]+\"\])$"
        ),
    ),
    ("canary", re.compile(r"canaryTrafficPercent$")),
    ("upgrade strategy", re.compile(r"upgradeStrategy\.type$")),
    (
        "llm engine",
        re.compile(
            r"engine_kwargs\.[a-z_]+$|model_loading_config\.[a-z_]+$|"
            r"args\[\d+\]$"
        ),
    ),
    (
        "runtime",
        re.compile(
            r"(\.runtime|modelFormat\.name|supportedModelFormats\[\d+\]\.name|"
            r"protocolVersion|routerType)$"
        ),
    ),
    ("storage", re.compile(r"(storageUri|storage\.path|storage\.key|model_source|model_id)$")),
    (
        "serve app",
        re.compile(
            r"(import_path|route_prefix|applications\[\d+\]\.name|"
            r"deployments\[\d+\]\.name|serviceName)$"
        ),
    ),
    ("image", re.compile(r"\.image$")),
]


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that refuses YAML alias bombs (too many alias expansions)."""

    max_aliases = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > self.max_aliases:
                raise SkipSource(f"YAML uses more than {self.max_aliases} aliases (alias bomb?)")
        return super().compose_node(parent, index)


@dataclass(slots=True)
class ManifestLoad:
    """Objects found in one file, and the objects in it that were skipped (with reasons)."""

    passages: list[Passage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def quote_templates(text: str) -> str:
    """Quote controller placeholders such as ``{{.Name}}`` that would otherwise break YAML."""
    return "\n".join(
        _TEMPLATE.sub(lambda m: m.group(1) + json.dumps(m.group(2)), line) for line in text.splitlines()
    )


def parse_documents(text: str, max_aliases: int, max_documents: int) -> list[Any]:
    """Parse every YAML document, with alias and document-count limits."""
    loader_cls = type("Loader", (_LimitedLoader,), {"max_aliases": max_aliases})
    loader = loader_cls(quote_templates(text))
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if expanded_size(node) > MAX_EXPANDED_NODES:
                raise SkipSource(f"YAML expands to more than {MAX_EXPANDED_NODES:,} nodes (alias bomb?)")
            docs.append(loader.construct_document(node))
            if len(docs) > max_documents:
                raise SkipSource(f"more than {max_documents} YAML documents")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SkipSource(f"invalid YAML: {problem}{where}") from exc
    except RecursionError as exc:
        raise SkipSource("YAML is nested too deeply") from exc
    finally:
        loader.dispose()
    return docs


def expanded_size(node: yaml.Node) -> int:
    """Node count once aliases are expanded, computed without expanding them."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = 1  # guards against recursive structures
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        else:
            total = 1
        memo[id(n)] = min(total, MAX_EXPANDED_NODES + 1)
        return memo[id(n)]

    return size(node)


def iter_objects(docs: list[Any]) -> Iterator[tuple[int, Any]]:
    """Yield (document number, object), expanding ``kind: List`` and ``*List`` wrappers."""
    for number, doc in enumerate(docs, 1):
        if doc is None:
            continue
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            for item in doc.get("items") or []:
                yield number, item
        else:
            yield number, doc


def looks_like_manifest(docs: list[Any]) -> bool:
    """Whether parsed YAML is Kubernetes objects (has apiVersion and kind)."""
    return any(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs)


def load_manifests(text: str, source: str, max_aliases: int = 64, max_documents: int = 500) -> ManifestLoad:
    """Turn a YAML file of Kubernetes objects into one passage per supported object."""
    docs = parse_documents(text, max_aliases, max_documents)
    if not looks_like_manifest(docs):
        raise SkipSource("YAML has no Kubernetes objects (no apiVersion/kind)")
    result = ManifestLoad()
    for number, obj in iter_objects(docs):
        if not isinstance(obj, dict) or not obj.get("kind"):
            result.skipped.append(f"document {number}: not a Kubernetes object (no kind)")
            continue
        kind = str(obj["kind"])
        name = str((obj.get("metadata") or {}).get("name") or "<unnamed>")
        if kind not in KIND_PLATFORM:
            result.skipped.append(f"{kind}/{name}: unknown kind {kind}")
            continue
        result.passages.append(summarize(obj, source))
    return result


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    obj = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(obj.get("metadata") or {})
    for key in _NOISE_META:
        meta.pop(key, None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    obj["metadata"] = meta
    return obj


def _key_path(prefix: str, key: Any) -> str:
    key = str(key)
    if _IDENT.match(key):
        return f"{prefix}.{key}" if prefix else key
    return f'{prefix}["{key}"]'


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (YAML path, scalar) for every leaf; ``serveConfigV2`` strings are parsed too."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = _key_path(prefix, key)
            if key == "serveConfigV2" and isinstance(value, str):
                yield from _serve_config_leaves(path, value)
            else:
                yield from leaves(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, node


def _serve_config_leaves(path: str, text: str) -> Iterator[tuple[str, Any]]:
    try:
        inner = yaml.safe_load(text)
    except yaml.YAMLError:
        yield path, "<serveConfigV2 is not valid YAML>"
        return
    for sub, value in leaves(inner):
        yield f"{path}:{sub}", value


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _classify(path: str, value: Any) -> str | None:
    for label, pattern in _RULES:
        if pattern.search(path):
            if label == "llm engine" and path.endswith("]") and not str(value).startswith("--"):
                continue
            return label
    return None


def _flags(fields: list[dict[str, str]]) -> list[str]:
    flags = []
    for f in fields:
        if f["label"] == "image" and (f["value"].endswith(":latest") or ":" not in f["value"].split("/")[-1]):
            flags.append(f"image not pinned (latest tag): {f['value']} at {f['path']}")
        if f["label"] == "replicas" and f["path"].endswith("minReplicas") and f["value"] == "0":
            flags.append(f"scale to zero enabled at {f['path']}")
        if f["label"] == "canary" and f["value"] not in ("0", "100"):
            flags.append(f"canary rollout in progress: {f['value']}% at {f['path']}")
    return flags


def summarize(obj: dict[str, Any], source: str) -> Passage:
    """Build the passage for one object: header, flags, labelled fields with paths, other fields."""
    obj, redacted = redact_object(_clean(obj))
    kind = str(obj["kind"])
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "<unnamed>")
    namespace = str(meta.get("namespace") or "default")
    platform = KIND_PLATFORM[kind]
    fields, others = [], []
    for path, value in leaves(obj):
        label = _classify(path, value)
        if label:
            fields.append({"label": label, "path": path, "value": _short(value)})
        elif not path.startswith(("apiVersion", "kind", "metadata.name", "metadata.namespace")):
            others.append(f"{path}: {_short(value, 100)}")
    order = {label: i for i, (label, _) in enumerate(_RULES)}
    fields.sort(key=lambda f: order[f["label"]])
    ref = f"{kind}/{name}"
    header = f"{kind} {name} in namespace {namespace} ({_platform_name(platform)}), from {source}"
    lines = [header, *_flags(fields)]
    if redacted:
        lines.append(f"{redacted} credential value(s) redacted at ingest")
    lines += [f"{f['label']}: {f['value']} at {f['path']}" for f in fields]
    lines += others[:60]
    return Passage(
        text="\n".join(lines),
        ref=ref,
        title=f"{kind}/{name}",
        locator=ref,
        source_type="manifest",
        platform=platform,
        meta={"kind": kind, "name": name, "namespace": namespace, "fields": json.dumps(fields[:120])},
    )


def _platform_name(platform: str) -> str:
    return {"kserve": "KServe", "ray-serve": "KubeRay / Ray Serve"}.get(platform, "Kubernetes")
