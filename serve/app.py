"""The ServeWise Serve application: ``Ingress`` (FastAPI) -> ``Retriever`` -> ``Reranker`` ->
``Generator``, composed with deployment handles.

    serve run serve/config.yaml            # or: servewise serve
    build_app({"settings": {...}})         # the application builder named in the config

The ingress runs the cheap pipeline steps itself (condense, scope check, decide, prompt, verify)
and calls the three stage deployments; tokens travel generator -> ingress -> client, the shortest
path the graph allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from assistant.config import Settings, apply_offline_env, load_settings
from assistant.conversations import Conversations
from assistant.errors import ModelLoadError, StoreError
from assistant.feedback import FeedbackStore
from assistant.generator import build_generator
from assistant.pipeline import Assistant
from assistant.types import Turn
from serve.api import create_api
from serve.deployments import GeneratorDeployment, RerankerDeployment, RetrieverDeployment
from serve.metrics import Metrics
from serve.remote import METER, Meter, RemoteGenerator, RemoteSearcher, call
from serve.schemas import Health

HEALTH_TIMEOUT_S = 10.0


class ServeBackend:
    """The routes' :class:`serve.api.Backend`: the pipeline over the stage deployments."""

    def __init__(
        self, settings: Settings, handles: dict[str, DeploymentHandle], model: str, metrics: Metrics
    ):
        self.settings = settings
        self.handles = handles
        self.model = model
        searcher = RemoteSearcher(
            handles["retriever"], handles["reranker"], settings.retrieval.rerank_depth, metrics
        )
        generator = RemoteGenerator(handles["generator"], model, metrics)
        conversations = Conversations(Path(settings.data_dir) / "conversations.sqlite")
        self.assistant = Assistant(settings, searcher, generator, conversations)

    async def stream(
        self, question: str, conversation_id: str | None, history: list[Turn] | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The pipeline's events; the answer carries ``serve_overhead_ms`` and the token count."""
        meter = Meter()
        METER.set(meter)  # this request's task (and tasks it starts) see this meter
        async for event in self.assistant.stream(question, conversation_id, history):
            if event["type"] == "answer":
                event["answer"].timings["serve_overhead_ms"] = round(meter.overhead_ms, 1)
                for stage, ms in meter.by_stage.items():
                    event["answer"].timings[f"wait_{stage.lower()}_ms"] = round(ms, 1)
                for stage, ms in meter.queued.items():
                    event["answer"].timings[f"queued_{stage.lower()}_ms"] = round(ms, 1)
                for part, ms in meter.split.items():
                    event["answer"].timings[f"{part.lower()}_ms"] = round(ms, 1)
                event["tokens"] = meter.tokens
            yield event

    async def health(self) -> Health:
        """Ready when the retriever has its index and the generator's engine answers."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                info = await call(self.handles["retriever"].info.remote(), "retriever", StoreError)
                model = await call(self.handles["generator"].check.remote(), "generator", ModelLoadError)
        except TimeoutError as exc:
            raise ModelLoadError(f"the graph did not answer within {HEALTH_TIMEOUT_S:.0f} s") from exc
        return Health(model=model, **info)

    async def replica_counts(self) -> dict[str, dict[str, int]]:
        """``{deployment: {state: n}}`` from Serve's controller."""
        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.settings.serve.app_name)
        if app is None:
            return {}
        return {
            name: {str(getattr(state, "value", state)): n for state, n in d.replica_states.items()}
            for name, d in app.deployments.items()
        }


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """The HTTP entry point; see :mod:`serve.api` for the routes. The FastAPI app is built in the
    replica (``__serve_build_asgi_app__``), after the backend it calls exists."""

    def __init__(
        self,
        settings: Settings,
        retriever: DeploymentHandle,
        reranker: DeploymentHandle,
        generator: DeploymentHandle,
    ) -> None:
        apply_offline_env()
        handles = {"retriever": retriever, "reranker": reranker, "generator": generator}
        model = build_generator(settings).name or "generator"  # not started: only its name
        self._api = create_api(settings.serve, feedback=FeedbackStore.from_config(settings))
        self._api.state.backend = ServeBackend(settings, handles, model, self._api.state.metrics)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._api


def bind_graph(settings: Settings) -> Application:
    """The bound application for these settings (deployment options from ``settings.serve``)."""
    # Replicas do not share the caller's working directory: pin the data dir.
    settings = settings.model_copy(update={"data_dir": Path(settings.data_dir).resolve()})
    s = settings.serve
    retriever = RetrieverDeployment.options(**s.retriever.options()).bind(settings)
    reranker = RerankerDeployment.options(**s.reranker.options()).bind(settings)
    generator = GeneratorDeployment.options(**s.generator.options()).bind(settings)
    return Ingress.options(**s.ingress.options()).bind(settings, retriever, reranker, generator)


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for ``serve run`` / ``serve deploy`` / a RayService: ``args`` holds
    ``settings`` (overrides) and optionally ``config_file``; the environment applies on top."""
    apply_offline_env()
    settings = load_settings(args.get("config_file"), base=args.get("settings") or {})
    return bind_graph(settings)
