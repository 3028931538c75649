"""``servewise serve`` and ``servewise serve-config``: the console script's entry point adds these
to the commands of :mod:`assistant.cli` (which never imports Ray itself), and ``servewise eval``
from :mod:`eval.cli` (which imports no Ray either: it scores the graph over HTTP).

    servewise serve [--host 127.0.0.1] [--port 8000]     # a local Ray, the app, until Ctrl-C
    servewise serve --address ray://HOST:10001           # deploy onto an existing cluster and return
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from assistant.cli import Context, cli, pass_ctx
from assistant.cli import main as cli_main
from assistant.config import OFFLINE_ENV, Settings, export_env
from assistant.errors import ModelLoadError
from assistant.index import Index
from assistant.serve_settings import RaySettings
from eval.cli import eval_command

cli.add_command(eval_command)

READY_TIMEOUT_S = 300.0
#: Ray Serve's throughput mode (Ray >= 2.56): gRPC between replicas (HTTP still enters through Serve's
#: proxy actor, which forwards to the ingress replica);
#: user code kept off the replica's own event loop (the mode's default puts it there, which made
#: requests wait behind the retriever's encoder: its queue at 8 clients 58-100 ms, 22 ms without).
THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}


def ray_env(r: RaySettings) -> dict[str, str]:
    """The environment a local Ray and Serve are started with, from ``serve.ray``: throughput mode,
    the controller's loop interval, the workers' niceness and the ingress's drain period on a stop.

    Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``) was measured and left out: it saved
    about 1.3% of a core at 8 clients, but its stats and metrics listeners bind every interface on
    fixed ports and its admin socket is world-writable."""
    env = dict(THROUGHPUT_ENV) if r.throughput_optimized else {}
    env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] = str(r.control_loop_interval_s)
    env["RAY_worker_niceness"] = str(r.worker_niceness)
    env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(r.ingress_drain_s)
    return env


@cli.command("serve")
@click.option("--host", default=None, help="Interface for HTTP (default: serve.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="HTTP port (default: 8000).")
@click.option("--address", default=None, help="Deploy onto this Ray cluster (ray://HOST:10001) and return.")
@click.option("--profile", type=click.Choice(["cpu", "gpu"]), default=None, help="Settings profile.")
@pass_ctx
def serve_command(
    ctx: Context, host: str | None, port: int | None, address: str | None, profile: str | None
) -> None:
    """Run ServeWise as a Ray Serve graph over the index in the data dir."""
    serve = {"host": host, "port": port, "profile": profile, "ray": {"address": address} if address else None}
    settings = ctx.with_flags({"serve": {k: v for k, v in serve.items() if v is not None}})
    if not address:
        Index.from_config(settings).require()  # fail fast, before Ray starts
    run(settings, wait=not address)


@cli.command("serve-config")
@click.option("--profile", type=click.Choice(["cpu", "gpu"]), default=None, help="Settings profile.")
@pass_ctx
def serve_config_command(ctx: Context, profile: str | None) -> None:
    """Print the Serve config file (for `serve run` / `serve deploy` / a RayService)."""
    from serve.config import render

    settings = ctx.with_flags({"serve": {"profile": profile}} if profile else {})
    click.echo(render(settings), nl=False)


def start_ray(settings: Settings) -> None:
    """Attach to ``serve.ray.address`` or start a small local Ray (no dashboard, capped store)."""
    import ray

    r = settings.serve.ray
    env = {"env_vars": dict(OFFLINE_ENV)}
    if r.address:
        ray.init(address=r.address, runtime_env=env, log_to_driver=False)
        return
    ray.init(
        num_cpus=r.num_cpus,
        object_store_memory=r.object_store_memory_mb * 1024 * 1024,
        include_dashboard=r.include_dashboard,
        runtime_env=env,
        log_to_driver=False,
        configure_logging=False,
    )


def run(settings: Settings, wait: bool = True) -> None:
    """Deploy the app; with ``wait``, block until Ctrl-C or SIGTERM, then shut everything down."""
    if not settings.serve.ray.address:
        export_env(ray_env(settings.serve.ray))  # read when Ray and Serve are imported and start
    import ray
    from ray import serve

    from serve.app import bind_graph

    s = settings.serve
    started = time.perf_counter()
    click.echo(f"starting Ray and the ServeWise graph ({s.profile} profile)...", err=True)
    start_ray(settings)
    try:
        serve.start(http_options={"host": s.host, "port": s.port}, proxy_location="HeadOnly")
        serve.run(bind_graph(settings), name=s.app_name, route_prefix="/", blocking=False)
        if not wait:  # a remote cluster: its proxy, not this machine, answers HTTP
            click.echo(f"ServeWise deployed to {s.ray.address} as '{s.app_name}'; see `serve status` there")
            return
        url = f"http://{s.host}:{s.port}"
        _wait_ready(url, settings)
        took = time.perf_counter() - started
        click.echo(f"ServeWise ready at {url} in {took:.1f} s (API docs: {url}/docs)", nl=True)
        _block_until_signal()
    finally:
        if wait:
            click.echo("shutting down...", err=True)
            serve.shutdown()
            ray.shutdown()


def _wait_ready(url: str, settings: Settings) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{url}/healthz", timeout=5.0)
            if reply.status_code == 200:
                return
            last = reply.json().get("error", {}).get("message", reply.text)
        except (httpx.HTTPError, ValueError) as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.5)
    raise ModelLoadError(f"ServeWise did not become ready within {READY_TIMEOUT_S:.0f} s: {last}")


def _block_until_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``servewise``): every command, ``serve`` included."""
    cli_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
