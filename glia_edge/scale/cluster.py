"""Connecting to Ray, and sizing actors and tasks with fractional CPUs from the cores available.

Why fractional: Ray schedules by logical CPUs. If every inference actor holds a whole CPU, a
2-core machine (or any node whose cores all went to actors) has no CPU left for the read and decode
tasks that feed those actors, and a Ray Data pipeline waits forever. :func:`plan_resources` keeps a
quarter of the cluster's CPUs (at least half a CPU) for decoding, gives each decode task a quarter
of a CPU, and splits the rest among the actors, at most one CPU each.
"""
from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

from glia_edge.errors import GliaError, one_line

log = logging.getLogger(__name__)

#: CPUs per decode task: small, so several decode tasks fit beside the actors on any node.
DECODE_TASK_CPUS = 0.25
#: How long the TCP probe of a ``--ray host:port`` waits before the cluster counts as unreachable.
PROBE_TIMEOUT_S = 3.0
#: How long a batch job waits for its actor pool to start (model loaded in every actor).
ACTOR_START_TIMEOUT_S = 600


@dataclass(frozen=True)
class ResourcePlan:
    """How a batch job (or a Serve deployment) asks Ray for CPUs."""

    cluster_cpus: float
    actors: int
    actor_cpus: float
    decode_cpus: float
    threads: int

    def describe(self) -> str:
        return (f"{self.actors} inference actor(s) x {self.actor_cpus:g} CPU ({self.threads} runtime thread(s) each), "
                f"decode tasks x {self.decode_cpus:g} CPU, on {self.cluster_cpus:g} cluster CPUs")


def plan_resources(cluster_cpus: float, actors: int | None = None, threads: int | None = None) -> ResourcePlan:
    """Fractional CPU sizes for ``actors`` inference actors on a cluster with ``cluster_cpus`` CPUs.

    - ``reserve = max(0.5, cluster_cpus / 4)`` CPUs stay free for decode tasks of 0.25 CPU each;
    - without ``actors``, one actor per whole CPU left (at least one);
    - each actor asks for ``min(1, (cluster_cpus - reserve) / actors)`` CPUs, rounded down to a
      hundredth, and runs the runtime with ``threads`` threads (default: its whole CPUs, at least 1).

    On 2 CPUs: 1 actor x 1 CPU (or 2 x 0.75) and 0.25-CPU decode tasks in the rest.
    """
    if cluster_cpus <= 0:
        raise ValueError(f"the Ray cluster has no CPUs ({cluster_cpus}); start it with --num-cpus")
    reserve = max(0.5, cluster_cpus / 4)
    spare = max(cluster_cpus - reserve, min(0.5, cluster_cpus / 2))
    actors = actors or max(1, int(spare))
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    actor_cpus = max(0.01, math.floor(min(1.0, spare / actors) * 100) / 100)
    decode_cpus = min(DECODE_TASK_CPUS, max(0.01, cluster_cpus - actors * actor_cpus))
    return ResourcePlan(cluster_cpus=cluster_cpus, actors=actors, actor_cpus=actor_cpus, decode_cpus=decode_cpus,
                        threads=threads or max(1, int(actor_cpus)))


class ClusterError(GliaError, ConnectionError):
    """The Ray cluster named by ``--ray`` cannot be joined; the message says why."""


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://...``) or start a local one.

    Returns True when this call started a local instance (the caller shuts it down). Ray's own log
    lines go to the worker log files, not to this terminal; bad inputs are reported in the output.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        probe(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # none running, unreachable, bad address
            raise ClusterError(f"cannot join the Ray cluster at {address!r}: {one_line(exc)}") from None
        return False
    cpus = num_cpus or os.cpu_count() or 1
    log.info("starting a local Ray instance with %d CPUs", cpus)
    # "local" starts a new instance even where a stale address file of an old cluster is left.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
    return True


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`ClusterError` unless something accepts a TCP connection at ``host:port`` (or
    ``ray://host:port``) within ``timeout``: ``ray.init`` would retry an address where nothing
    listens for minutes, deaf to SIGTERM. ``auto`` and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    host = host.strip("[]")  # [::1]:6379
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, OverflowError) as exc:  # refused, unreachable, unknown host, timed out; port > 65535
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: nothing answers at {host}:{port} "
                           f"({reason})") from None


def cluster_cpus() -> float:
    """Logical CPUs the connected cluster offers (all alive nodes)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def quiet_ray_data() -> Any:
    """Ray Data's own progress bars and start-up lines off: the driver draws one progress bar."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Start scoring once every actor has loaded its backend, so work spreads over all of them, and
    # fail with a clear timeout (instead of waiting forever) when the cluster cannot place the pool.
    ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    notice_log = logging.getLogger("ray.data._internal.progress")  # filters do not reach child loggers
    if not any(isinstance(f, _DropProgressNotice) for f in notice_log.filters):
        notice_log.addFilter(_DropProgressNotice())
    return ctx


class _DropProgressNotice(logging.Filter):
    """Ray Data warns that its progress bars are off; the driver shows its own, so drop that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")
