"""Settings for running ServeWise as a Ray Serve graph (the ``serve`` section of the settings tree).

Pure pydantic: ``serve/`` reads these; nothing here imports Ray. A *profile* is a layer of
defaults under the user's file and environment: ``cpu`` (this machine: fractional CPUs, vLLM's
CPU build, embedded Chroma) or ``gpu`` (one GPU for the generator, a Chroma server).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeploymentSettings(_Section):
    """One deployment's Serve options (passed to ``Deployment.options``)."""

    num_replicas: int | Literal["auto"] = Field(default=1, description="Ignored when autoscaling is set.")
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="Serve's default of 5 queues concurrent chats: raised on every stage."
    )
    max_queued_requests: int = Field(
        default=-1, ge=-1, description="Beyond this many waiting requests callers get 503 (-1: no limit)."
    )
    autoscaling_config: dict[str, Any] | None = Field(
        default=None, description="Serve autoscaling, e.g. {min_replicas: 1, max_replicas: 4}."
    )
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.25})

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        out: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": dict(self.ray_actor_options),
        }
        if self.autoscaling_config:
            out["autoscaling_config"] = dict(self.autoscaling_config)
        else:
            out["num_replicas"] = self.num_replicas
        return out


class IngressSettings(DeploymentSettings):
    """The ingress: every concurrent chat passes through it, so it admits and queues more."""

    max_ongoing_requests: int = Field(default=128, ge=1)
    max_queued_requests: int = Field(default=256, ge=-1)


class BatchSettings(_Section):
    """``@serve.batch`` for a stage that pays for batching (query embedding, reranking)."""

    max_batch_size: int = Field(default=8, ge=1)
    batch_wait_timeout_s: float = Field(
        default=0.0, ge=0.0, le=1.0, description="0: batch what is already queued, never wait for more."
    )


class RaySettings(_Section):
    """The local Ray started by ``servewise serve`` (ignored when attaching to a cluster)."""

    address: str | None = Field(default=None, description="ray://HOST:10001 or auto; empty: start one.")
    num_cpus: float | None = Field(default=None, gt=0, description="Empty: every CPU of the machine.")
    object_store_memory_mb: int = Field(default=256, ge=78)
    include_dashboard: bool = False
    throughput_optimized: bool = Field(
        default=True,
        description="Start Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (gRPC between replicas) and user "
        "code in its own thread in each replica: less Serve overhead per answer.",
    )
    worker_niceness: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Niceness of Ray's worker processes, the replicas among them (Ray's own default is "
        "15, which makes every hop wait behind the model for a core).",
    )
    ingress_drain_s: float = Field(
        default=1.0,
        ge=0.0,
        le=300.0,
        description="How long the ingress replica stays reachable after a stop before it drains (Serve's "
        "direct ingress, part of throughput mode, waits 30 s by default for external load balancers to "
        "deregister it; a local app has none). Requests in flight are waited for either way.",
    )
    control_loop_interval_s: float = Field(
        default=0.5,
        gt=0.0,
        le=10.0,
        description="How often Serve's controller runs its loop (Ray's default 0.1 s costs ~3% of a core "
        "when idle); it bounds how fast replica failures and autoscaling decisions are acted on.",
    )


class ServeSettings(_Section):
    """The HTTP app and its deployments."""

    profile: Literal["cpu", "gpu"] = "cpu"
    app_name: str = "servewise"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    auth_token: SecretStr | None = Field(default=None, description="Bearer token for every route but health.")
    max_body_bytes: int = Field(default=65536, ge=1024, description="Larger request bodies get 413.")
    max_inflight: int = Field(
        default=64, ge=1, description="Answers in progress per ingress replica; beyond: 503 + Retry-After."
    )
    request_timeout_s: float = Field(default=180.0, gt=0)
    stream_interval_ms: float = Field(
        default=150.0,
        ge=0.0,
        description="Text goes generator -> ingress -> proxy in chunks at most this "
        "often (the first at once): each chunk is a Ray hop, so fewer chunks leave the CPUs to the model.",
    )
    stream_chunks_per_s: float = Field(
        default=25.0,
        gt=0.0,
        description="Chunks per second one generator replica sends over all its streams: with many "
        "streams in flight each one's chunks come less often than stream_interval_ms (8 streams: 320 ms), "
        "so Serve's hops per second stay flat as the load grows.",
    )
    ray: RaySettings = RaySettings()
    ingress: IngressSettings = IngressSettings()
    retriever: DeploymentSettings = DeploymentSettings()
    reranker: DeploymentSettings = DeploymentSettings()
    generator: DeploymentSettings = DeploymentSettings()
    retriever_batch: BatchSettings = BatchSettings()
    reranker_batch: BatchSettings = BatchSettings()


#: Layers of defaults, under the config file and the environment.
PROFILES: dict[str, dict[str, Any]] = {
    # vLLM shares the CPUs with the other stages: every other stage and Serve's hops preempt it.
    # Two retriever replicas: under load one replica's queue was most of Serve's overhead.
    "cpu": {"generator": {"engine_idle": True}, "serve": {"retriever": {"num_replicas": 2}}},
    "gpu": {
        "generator": {"gpu_memory_utilization": 0.85, "enforce_eager": False},
        "serve": {
            "host": "0.0.0.0",
            "ingress": {"ray_actor_options": {"num_cpus": 1}},
            "retriever": {"ray_actor_options": {"num_cpus": 1}},
            "reranker": {"ray_actor_options": {"num_cpus": 1}},
            "generator": {"ray_actor_options": {"num_cpus": 2, "num_gpus": 1}},
        },
    },
}
