"""Loaders: headings and section paths, criteria front matter, Kubernetes objects, bad input."""

import json

import pytest

from assistant.config import IngestSettings
from assistant.errors import SkipSource
from assistant.ingest import k8s, loaders, text
from assistant.ingest.redact import REDACTED, redact_text

LIMITS = IngestSettings(progress=False)


def load(name: str, content: str | bytes):
    data = content.encode() if isinstance(content, str) else content
    from pathlib import Path

    return loaders.load(Path(name), name, data, LIMITS)


def test_markdown_sections_keep_their_path_and_skip_code_fences():
    md = "# Guide\nintro\n## Setup\nsteps\n```\n# not a heading\n```\n### Deep\ndetail\n## Next\nmore\n"
    passages = load("docs/guide.md", md).passages
    locators = [p.locator for p in passages]
    assert locators == ["Guide", "Guide › Setup", "Guide › Setup › Deep", "Guide › Next"]
    assert "# not a heading" in passages[1].text
    assert passages[2].ref == "docs/guide#deep"


def test_criterion_front_matter():
    md = (
        "---\nid: review/rollback-unit\ntitle: What is the rollback unit?\nkind: review-question\n"
        "dimension: rollouts\nfavours: neutral\nkserve_signals: [one]\nray_serve_signals: []\n---\n"
        "# What is the rollback unit?\n\nBody text here.\n"
    )
    [p] = load("corpus/criteria/review/rollback-unit.md", md).passages
    assert (p.ref, p.source_type, p.platform) == ("review/rollback-unit", "criterion", "neutral")
    assert p.meta["dimension"] == "rollouts"
    assert json.loads(p.meta["signals"])["kserve"] == ["one"]
    assert p.text.startswith("What is the rollback unit?\n\nBody text")


def test_criterion_with_bad_favours_is_skipped():
    md = "---\nid: x/y\ntitle: T\nfavours: both\n---\nbody\n"
    with pytest.raises(SkipSource, match="favours"):
        load("c.md", md)


def test_platform_doc_splits_on_level_two_only():
    md = (
        "---\ntype: platform\nplatform: kserve\ntitle: KServe canary\n---\n# KServe canary\n"
        "## Traffic split\nuse canaryTrafficPercent\n### detail\nstill same section\n## Rollback\nset 0\n"
    )
    passages = load("corpus/platforms/kserve/canary-rollout.md", md).passages
    assert [p.ref for p in passages] == [
        "kserve/canary-rollout#traffic-split",
        "kserve/canary-rollout#rollback",
    ]
    assert all(p.source_type == "platform" and p.platform == "kserve" for p in passages)
    assert "still same section" in passages[0].text


def test_plain_text_headings():
    txt = (
        "KServe vs Ray Serve\n\nIntro paragraph about KServe and Ray Serve.\n\n"
        "Short decision\n\nUse KServe when.\n"
    )
    passages = load("seed.txt", txt).passages
    assert [p.locator for p in passages] == ["KServe vs Ray Serve", "KServe vs Ray Serve › Short decision"]


def test_html_headings_and_scripts():
    html = (
        "<html><head><script>var x = 1;</script></head><body><h1>Ray Serve</h1><p>Intro RayService"
        " and Ray Serve.</p><h2>Autoscaling</h2><ul><li>min_replicas</li></ul></body></html>"
    )
    passages = load("page.html", html).passages
    assert [p.locator for p in passages] == ["Ray Serve", "Ray Serve › Autoscaling"]
    assert "var x" not in " ".join(p.text for p in passages)
    assert "- min_replicas" in passages[1].text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("a.png", b"\x89PNG", "unsupported file type"),
        ("a.md", b"abc\x00def", "binary"),
        ("a.md", b"caf\xe9 au lait", "not UTF-8"),
        ("a.yaml", b"kind: [unclosed\n", "invalid YAML"),
        ("a.yaml", b"just: data\nno: kubernetes\n", "no Kubernetes objects"),
        ("a.md", b"   \n", "empty"),
        ("a.md", b"x" * (LIMITS.max_file_bytes + 1), "over the"),
    ],
)
def test_bad_input_is_skipped_with_a_reason(name, data, reason):
    with pytest.raises(SkipSource, match=reason):
        load(name, data)


def test_yaml_alias_bomb_is_refused():
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\na: &a [lol, lol]\n"
    for i in range(1, 22):
        bomb += f"l{i}: &l{i} [*{'a' if i == 1 else f'l{i - 1}'}, *{'a' if i == 1 else f'l{i - 1}'}]\n"
    with pytest.raises(SkipSource, match="alias"):
        load("bomb.yaml", bomb)


def test_deep_nesting_is_refused():
    with pytest.raises(SkipSource, match="nested too deeply"):
        load("deep.yaml", "apiVersion: v1\nkind: ConfigMap\ndata: " + "[" * 5000 + "]" * 5000 + "\n")


def test_multi_document_list_and_unknown_kinds():
    docs = """
apiVersion: v1
kind: List
items:
- apiVersion: serving.kserve.io/v1beta1
  kind: InferenceService
  metadata: {name: a, namespace: ml, managedFields: [{x: 1}], uid: abc}
  spec: {predictor: {canaryTrafficPercent: 20, minReplicas: 0, model: {modelFormat: {name: sklearn},
         storageUri: "gs://b/m"}}}
  status: {url: http://a}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
- not an object
"""
    result = load("list.yaml", docs)
    [p] = result.passages
    assert p.ref == "InferenceService/a" and p.platform == "kserve"
    assert "canary rollout in progress: 20%" in p.text
    assert "scale to zero enabled" in p.text
    assert "managedFields" not in p.text and "status" not in p.text
    assert result.skipped == [
        "Widget/w: unknown kind Widget",
        "document 3: not a Kubernetes object (no kind)",
    ]


def test_serve_config_v2_is_parsed_into_field_paths():
    manifest = """
apiVersion: ray.io/v1
kind: RayService
metadata: {name: deepseek-r1}
spec:
  upgradeStrategy: {type: NewCluster}
  serveConfigV2: |
    applications:
    - name: llm
      import_path: ray.serve.llm:build_openai_app
      args:
        llm_configs:
        - engine_kwargs: {tensor_parallel_size: 8}
  rayClusterConfig:
    workerGroupSpecs:
    - groupName: gpu
      template: {spec: {containers: [{name: w, image: "rayproject/ray:2.9.0",
                 resources: {limits: {nvidia.com/gpu: 8}}}]}}
"""
    [p] = load("ray.yaml", manifest).passages
    paths = {f["path"]: f["value"] for f in json.loads(p.meta["fields"])}
    key = "spec.serveConfigV2:applications[0].args.llm_configs[0].engine_kwargs.tensor_parallel_size"
    assert paths[key] == "8"
    gpu = (
        "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0]"
        '.resources.limits["nvidia.com/gpu"]'
    )
    assert paths[gpu] == "8"
    assert paths["spec.upgradeStrategy.type"] == "NewCluster"
    assert key in p.text


def test_controller_placeholders_do_not_break_parsing():
    runtime = (
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ClusterServingRuntime\nmetadata:\n"
        "  name: rt\n  labels:\n    a: {{.Labels.x}}\nspec:\n  containers:\n  - args:\n"
        "    - --model_name={{.Name}}\n    image: kserve/sklearnserver:latest\n"
    )
    assert k8s.quote_templates("    a: {{.Labels.x}}") == '    a: "{{.Labels.x}}"'
    [p] = load("rt.yaml", runtime).passages
    assert "image not pinned (latest tag)" in p.text


def test_secrets_and_credential_env_values_are_redacted():
    manifest = """
apiVersion: v1
kind: Secret
metadata:
  name: creds
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"HF_TOKEN":"hf_abcdefghijklmnopqrstu"}}'
stringData: {HF_TOKEN: hf_abcdefghijklmnopqrstu, password: hunter2hunter2}
data: {key: c2VjcmV0}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      containers:
      - name: c
        image: app:1.0
        env:
        - {name: AWS_SECRET_ACCESS_KEY, value: wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY}
        - {name: LOG_LEVEL, value: debug}
        - name: FROM_SECRET
          valueFrom: {secretKeyRef: {name: creds, key: key}}
        args: ["--token=ghp_abcdefghijklmnopqrstuvwxyz0123"]
"""
    passages = load("s.yaml", manifest).passages
    blob = " ".join(p.text + p.meta["fields"] for p in passages)
    for secret in ("hf_abcdefghijklmnopqrstu", "hunter2", "c2VjcmV0", "wJalrXUtnFEMI", "ghp_abcdefgh"):
        assert secret not in blob
    assert REDACTED in blob and "debug" in blob and "secretKeyRef" in blob


def test_redact_text_keeps_references():
    assert redact_text("export HF_TOKEN=$HF_TOKEN") == "export HF_TOKEN=$HF_TOKEN"
    assert redact_text("API_KEY=abcdef123456") == f"API_KEY={REDACTED}"


def test_text_slug():
    assert text.slug("Scale to zero & KPA!") == "scale-to-zero-kpa"
