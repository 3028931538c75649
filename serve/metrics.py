"""Prometheus metrics of the ingress replica, served at ``GET /metrics``.

Per-stage latency histograms, queue wait per downstream deployment (handle round trip minus the
time the deployment spent on the call), Serve's own overhead per request, tokens generated,
requests by route and status, requests in flight, and replica counts per deployment and state
(read from Serve's controller when scraped). Each ingress replica reports its own figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("retrieve", "rerank", "first_token", "generate", "total")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    """One registry per ingress replica (not the process-global one Ray also writes to)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram(
            "servewise_stage_seconds", "Latency of each answer stage.", ["stage"], registry=r, buckets=BUCKETS
        )
        self.queue_wait = Histogram(
            "servewise_queue_wait_seconds",
            "Handle round trip minus the deployment's own time: queueing and transfer.",
            ["deployment"],
            registry=r,
            buckets=FAST_BUCKETS,
        )
        self.overhead = Histogram(
            "servewise_serve_overhead_seconds",
            "Per request: time spent in Serve between the ingress and the stages, model time excluded.",
            registry=r,
            buckets=FAST_BUCKETS,
        )
        self.tokens = Counter(
            "servewise_tokens_generated", "Text deltas streamed by the generator.", registry=r
        )
        self.requests = Counter(
            "servewise_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.inflight = Gauge("servewise_inflight_requests", "Answers being produced now.", registry=r)
        self.replicas = Gauge(
            "servewise_replicas", "Replicas per deployment and state.", ["deployment", "state"], registry=r
        )

    def observe_timings(self, timings: dict[str, float]) -> None:
        """Record an Answer's ``timings`` (milliseconds) into the stage histograms."""
        for stage in STAGES:
            if f"{stage}_ms" in timings:
                self.stage.labels(stage).observe(timings[f"{stage}_ms"] / 1000)
        if "serve_overhead_ms" in timings:
            self.overhead.observe(timings["serve_overhead_ms"] / 1000)

    def set_replicas(self, counts: dict[str, dict[str, int]]) -> None:
        """``{deployment: {state: n}}`` from Serve's status."""
        self.replicas.clear()
        for deployment, states in counts.items():
            for state, n in states.items():
                self.replicas.labels(deployment, state).set(n)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
