"""`bc-ray serve`: run the compatibility service on a local (or given) Ray cluster."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Optional

import typer

from bc_ray.cli.common import StoreOption, default_of
from bc_ray.serve.config import ServeConfig, ServeSettings

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="HTTP port.")]
NumReplicas = Annotated[int, typer.Option(help="Fixed number of replicas.")]
MinReplicas = Annotated[Optional[int], typer.Option(
    help="Autoscaling minimum (with --max-replicas).")]
MaxReplicas = Annotated[Optional[int], typer.Option(help="Autoscaling maximum.")]
MaxRows = Annotated[int, typer.Option(help="Rows per request before 413.")]
PollInterval = Annotated[float, typer.Option(
    help="Seconds between looks at the store for a new version.")]
Address = Annotated[Optional[str], typer.Option(
    help="Ray address (default: RAY_ADDRESS or a local cluster).")]
Detach = Annotated[bool, typer.Option(
    "--detach", help="Deploy and return (on a running cluster) instead of blocking.")]
FastIngress = Annotated[bool, typer.Option(
    help="On a cluster this command starts: Ray Serve's HAProxy + direct ingress instead of the "
         "Python proxy (about 2x lower latency for small requests).")]


def serve(
    store: StoreOption,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    num_replicas: NumReplicas = default_of(ServeConfig, "num_replicas"),
    min_replicas: MinReplicas = default_of(ServeConfig, "min_replicas"),
    max_replicas: MaxReplicas = default_of(ServeConfig, "max_replicas"),
    max_rows: MaxRows = default_of(ServeSettings, "max_rows"),
    poll_interval: PollInterval = default_of(ServeSettings, "poll_interval_s"),
    address: Address = None,
    detach: Detach = False,
    fast_ingress: FastIngress = True,
) -> None:
    """Serve compatible embeddings and transforms over HTTP (Ray Serve).

    Routes /v1/transform, /v1/embeddings, /v1/versions; BC_RAY_SERVE_TOKEN (in this
    process's environment, inherited by the replicas of the cluster it starts) turns bearer
    auth on. Ctrl-C or SIGTERM stops what it started (the application on a joined cluster;
    Serve, HAProxy and the local Ray cluster otherwise) within 30 s and exits 0."""
    # A start-up thread still inside `serve.run` when a signal stops everything must not
    # silently start a new Ray from its next call (Ray's core worker then kills the process).
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    from ray import serve as ray_serve

    from bc_ray.cluster import connect, enable_fast_ingress
    from bc_ray.serve.app import build_app, check_store

    check_store(store)
    config = ServeConfig(store=store, num_replicas=num_replicas, min_replicas=min_replicas,
                         max_replicas=max_replicas,
                         settings=ServeSettings.from_dict({"max_rows": max_rows,
                                                           "poll_interval_s": poll_interval}))
    joined = bool(address or os.environ.get("RAY_ADDRESS"))
    if fast_ingress and not joined:
        enable_fast_ingress()
    connect(address)

    def start() -> None:
        ray_serve.start(http_options=config.http_options(host, port))
        ray_serve.run(build_app(config), name=config.name, route_prefix=config.route_prefix)

    serving = f"serving {store} at http://{host}:{port} (OpenAPI: /docs)"
    if detach:
        start()
        typer.echo(serving)
        return
    _serve_until_stopped(start, config.name, serving, joined)


def _serve_until_stopped(start: Callable[[], None], name: str, serving: str, joined: bool
                         ) -> None:
    """Start in the background and serve until Ctrl-C or SIGTERM, then stop what was
    started (`joined`: only the application, on a cluster this command did not start)."""
    from bc_ray.serve.lifetime import START_GRACE_S, StopSignal, start_in_background, stop_serving

    stop = StopSignal()  # after connect: see StopSignal
    ready, failure = start_in_background(start)
    received = stop.wait(until=ready)
    if received is None:
        if failure:
            raise failure[0]
        typer.echo(serving)
        received = stop.wait()
    ready.wait(START_GRACE_S)  # `serve.run` returns ~1 s after the application is reachable
    typer.echo(f"{signal.Signals(received).name}: stopping "
               f"{'the application' if joined else 'Serve and the local Ray cluster'}", err=True)
    forced = stop_serving(name, started_cluster=not joined)
    for line in forced:
        typer.echo(f"  {line}", err=True)
    typer.echo("stopped", err=True)
    if forced:  # Ray's driver half shut down: its exit hooks would wait on what is gone
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
