"""``glia-edge serve``: score images over HTTP with Ray Serve (POST image bytes, get JSON).

Starts (or joins) a Ray cluster, deploys ``--replicas`` copies of the scorer, each with one backend
built from the artifact shipped through Ray's object store, and serves until Ctrl-C or SIGTERM.
Routes, limits and error statuses are described in :mod:`glia_edge.scale.serve`.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import cli_errors

log = logging.getLogger(__name__)

APP_NAME = "glia-edge"


def serve(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Artifact to serve (default: packaged model)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the HTTP proxy listens on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="HTTP port."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray", help="Ray cluster to join: host:port, ray://host:port or auto (default: start a local one)."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="Scorer replicas (each holds one backend)."),
    replica_cpus: Optional[float] = typer.Option(
        None, "--replica-cpus", min=0.01, help="CPUs per replica (default: fractional, from the cluster's CPUs)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Runtime threads per replica."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Gather concurrent requests into one call."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1, help="Most images per batched call."),
    batch_wait_ms: float = typer.Option(10.0, "--batch-wait-ms", min=0.0, help="Longest wait to fill a batch."),
    max_body_mb: float = typer.Option(20.0, "--max-body-mb", min=0.001, help="Largest request body, in MiB (413 above)."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1, help="Largest image, in pixels (413 above)."),
    crops: Optional[int] = typer.Option(None, "--crops", help="Crops per image: 1, 5 or 9 (default: the model's)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Precision hint passed to the backend."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of a local Ray instance."),
) -> None:
    """Serve scores over HTTP: POST /score with image bytes; GET /healthz. Ctrl-C stops."""
    from glia_edge.preprocess import CROP_COUNTS
    from glia_edge.scale import require_ray

    if crops is not None and crops not in CROP_COUNTS:
        typer.secho(f"error: --crops must be 1, 5 or 9, got {crops}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if ray_address is None:  # a local Ray instance will listen here: fail now, not after starting it
        problem = _port_problem(host, port)
        if problem:
            typer.secho(f"error: cannot listen on {host}:{port}: {problem}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
    with cli_errors():
        require_ray()
        _serve(model, host, port, ray_address, replicas, replica_cpus, threads, batching, max_batch_size,
               batch_wait_ms, max_body_mb, max_pixels, crops, precision, num_cpus)


def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, no such address), or None. Binds the way
    Serve's HTTP proxy does (SO_REUSEADDR), so a port in TIME_WAIT is not refused."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return exc.strerror or str(exc)
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _serve(model: Optional[Path], host: str, port: int, address: Optional[str], replicas: int,
           replica_cpus: Optional[float], threads: Optional[int], batching: bool, max_batch_size: int,
           batch_wait_ms: float, max_body_mb: float, max_pixels: int, crops: Optional[int],
           precision: Optional[str], num_cpus: Optional[int]) -> None:
    import ray
    from ray import serve as ray_serve

    from glia_edge.scale.artifact import ArtifactBundle, read_artifact_meta
    from glia_edge.scale.cluster import cluster_cpus, connect, plan_resources
    from glia_edge.scale.serve import ServeSettings, build_app

    pick: dict[str, Any] = {}
    if model is None:  # the packaged model, on the runtime `glia-edge score` picks here
        from glia_edge.scale.artifact import default_model

        model, pick = default_model(precision)
    read_artifact_meta(model)  # an unusable artifact is one line here, not a replica failing on the cluster
    bundle = ArtifactBundle.from_path(model)
    started_local = connect(address, num_cpus=num_cpus)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    # Handlers go in before deploying, so a stop requested while Serve starts still cleans up.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        plan = plan_resources(cluster_cpus(), replicas, threads)
        settings = ServeSettings(max_body_bytes=int(max_body_mb * 2**20), max_pixels=max_pixels, crops=crops,
                                 batching=batching, max_batch_size=max_batch_size,
                                 batch_wait_s=batch_wait_ms / 1000.0, threads=plan.threads)
        options = {**pick, **({"precision": precision} if precision else {})}
        cpus = replica_cpus or plan.actor_cpus
        ray_serve.start(http_options={"host": host, "port": port})
        app = build_app(bundle, settings, replicas=replicas, replica_cpus=cpus, backend_options=options)
        ray_serve.run(app, name=APP_NAME, route_prefix="/")
        log.info("serving %s (%s) on http://%s:%d/score with %d replica(s) x %g CPU, batching %s",
                 bundle.name, bundle.sha256[:12], host, port, replicas, cpus, "on" if batching else "off")
        if not stop.is_set():
            typer.echo(f"ready: http://{host}:{port}/score", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            if started_local:
                ray_serve.shutdown()
            else:  # a shared cluster keeps Serve (and other applications) running
                ray_serve.delete(APP_NAME)
        except Exception as exc:  # noqa: BLE001 - shutting down after another failure: report and go on
            log.warning("could not remove the Serve application: %s", exc)
        ray.shutdown()


def register(app: typer.Typer) -> None:
    app.command()(serve)
