"""``glia-edge serve``: score images over HTTP with Ray Serve (POST image bytes, get JSON).

Starts (or joins) a Ray cluster, deploys ``--replicas`` copies of the scorer, each with one backend
built from the artifact shipped through Ray's object store, and serves until Ctrl-C or SIGTERM.
Routes, limits and error statuses are described in :mod:`glia_edge.scale.serve`.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import (MAX_PIXELS_HELP, PRECISION_HELP, check_precision_name, checked_artifact_meta,
                                  cli_errors, exit_on_interrupt, fail, quiet_ray_logs, sigterm_as_interrupt)
from glia_edge.errors import one_line

log = logging.getLogger(__name__)

APP_NAME = "glia-edge"

#: An exception line of a traceback: ``ValueError: ...``, ``ray.exceptions.RayTaskError(ValueError): ...``.
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit|Interrupt))(?:\((\w+)\))?: (.+)$")


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
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help=MAX_PIXELS_HELP.format(": 413 above")),
    crops: Optional[int] = typer.Option(None, "--crops", help="Crops per image: 1, 5 or 9 (default: the model's)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of a local Ray instance."),
) -> None:
    """Serve scores over HTTP: POST /score with image bytes; GET /healthz. Ctrl-C or SIGTERM stops
    (exit 130 or 143) after the requests in flight are answered."""
    from glia_edge.preprocess import CROP_COUNTS
    from glia_edge.scale import require_ray

    if crops is not None and crops not in CROP_COUNTS:
        fail(f"--crops must be 1, 5 or 9, got {crops}")
    check_precision_name(precision)
    if ray_address is None:  # a local Ray instance will listen here: fail now, not after starting it
        problem = _port_problem(host, port)
        if problem:
            fail(f"cannot listen on {host}:{port}: {problem}")
    with cli_errors():
        require_ray()
        pick: dict[str, Any] = {}
        if model is None:  # the packaged model, on the runtime `glia-edge score` picks here
            from glia_edge.scale.artifact import default_model

            model, pick = default_model(precision)
        # An unusable artifact, or one of another --precision, is one line here, before Ray starts,
        # not a replica failing on the cluster.
        checked_artifact_meta(model, precision)
        options = {**pick, **({"precision": precision} if precision else {})}
        with exit_on_interrupt(lambda: "the server stopped"):
            _serve(model, host, port, ray_address, replicas, replica_cpus, threads, batching, max_batch_size,
                   batch_wait_ms, max_body_mb, max_pixels, crops, options, num_cpus)


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


def deploy_failure_reason(message: str) -> str:
    """The reason in Serve's "Deploying application ... failed: <replica traceback>" message: the
    last exception line of the traceback (``ValueError: ...`` -> its text), else its last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match and match.group(1) not in ("RayTaskError", "RayActorError"):
            return match.group(3)
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return match.group(3)
    return lines[-1] if lines else "no reason given"


def _serve(model: Path, host: str, port: int, address: Optional[str], replicas: int, replica_cpus: Optional[float],
           threads: Optional[int], batching: bool, max_batch_size: int, batch_wait_ms: float, max_body_mb: float,
           max_pixels: Optional[int], crops: Optional[int], options: dict[str, Any], num_cpus: Optional[int]) -> None:
    """Deploy and serve until a signal. Ctrl-C and SIGTERM arrive as ``KeyboardInterrupt`` (also
    while Ray starts), and stopping removes the application first, so the replicas answer the
    requests in flight (within the deployment's graceful shutdown timeout) before Serve goes."""
    import ray
    from ray import serve as ray_serve

    from glia_edge.scale.artifact import ArtifactBundle
    from glia_edge.scale.cluster import cluster_cpus, connect, plan_resources
    from glia_edge.scale.serve import ServeSettings, build_app

    bundle = ArtifactBundle.from_path(model)
    try:
        quiet_ray_logs()  # importing ray.serve set them; joining resets "ray" again
        connect(address, num_cpus=num_cpus)
        quiet_ray_logs()
        with sigterm_as_interrupt():  # after connect: it replaces the handler Ray installs
            plan = plan_resources(cluster_cpus(), replicas, threads)
            settings = ServeSettings(max_body_bytes=int(max_body_mb * 2**20), max_pixels=max_pixels, crops=crops,
                                     batching=batching, max_batch_size=max_batch_size,
                                     batch_wait_s=batch_wait_ms / 1000.0, threads=plan.threads)
            cpus = replica_cpus or plan.actor_cpus
            ray_serve.start(http_options={"host": host, "port": port})
            app = build_app(bundle, settings, replicas=replicas, replica_cpus=cpus, backend_options=options)
            try:
                ray_serve.run(app, name=APP_NAME, route_prefix="/")
            except RuntimeError as exc:  # DEPLOY_FAILED: the replica's traceback, reduced to its reason
                fail(f"the replicas could not start: {deploy_failure_reason(_deployment_message(ray_serve, exc))}")
            log.info("serving %s (%s) on http://%s:%d/score with %d replica(s) x %g CPU, batching %s",
                     bundle.name, bundle.sha256[:12], host, port, replicas, cpus, "on" if batching else "off")
            typer.echo(f"ready: http://{host}:{port}/score", err=True)
            while True:
                time.sleep(3600)
    finally:
        if ray.is_initialized():
            _remove_app(ray_serve)
        ray.shutdown()  # a local instance this command started goes with it, Serve's controller and proxy too


def _remove_app(ray_serve: Any) -> None:
    """Delete the application: that waits while its replicas answer the requests in flight (within
    the deployment's graceful shutdown timeout), whereas ``serve.shutdown`` stops the proxy under
    them (and makes Ray print the controller's death on stdout). A shared cluster keeps Serve and
    its other applications; a local instance stops with ``ray.shutdown``."""
    try:
        ray_serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 - shutting down after another failure: report and go on
        log.warning("could not remove the Serve application: %s", one_line(exc))


def _deployment_message(ray_serve: Any, exc: Exception) -> str:
    """The failed deployment's own status message (it holds the replica's traceback; the
    application's says only "Failed to update the deployments"), else the exception's."""
    try:
        app = ray_serve.status().applications.get(APP_NAME)
        messages = [d.message for d in (app.deployments.values() if app else ()) if d.message]
    except Exception:  # noqa: BLE001 - the status is a nicety: the exception still says something
        messages = []
    return messages[0] if messages else str(exc)


def register(app: typer.Typer) -> None:
    app.command()(serve)
