"""Real Ray clusters for the Ray tests, on loopback addresses only, stopped by process id.

``RayCluster`` starts ``ray start --head --block`` (and optionally more nodes with ``ray start
--address``) as child processes in their own sessions, on 127.0.0.x node addresses with a fresh
authentication token and a short private temp folder. ``stop()`` sends SIGTERM to each blocking
``ray start`` (which stops the processes it started), then SIGKILLs whatever is left of those
process groups, so nothing outlives the test module and no other Ray instance is touched.

Import this module before ``ray``: it sets the authentication token that the clusters and this
test process share, and Ray reads that setting when it is first imported.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent

# Ray reads its authentication settings when it is first imported, so the token this test process
# shares with the clusters it starts is fixed here, before any test module imports ray.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", uuid.uuid4().hex)
os.environ.pop("RAY_ADDRESS", None)


# The alive nodes of the cluster at argv[1], as one JSON line (run in a child process).
_NODES_PROBE = (
    "import json, sys, ray\n"
    "ray.init(address=sys.argv[1], log_to_driver=False)\n"
    "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))\n"
)


@dataclass
class CliResult:
    """What a ``glia-edge`` command run as its own process left: exit status and output."""

    exit_code: int
    output: str  # stdout and stderr, interleaved as written


def run_cli(*args: object, timeout: float = 600.0) -> CliResult:
    """Run the installed ``glia-edge`` console script in its own process (Ray drivers must not
    live in the test process; see ``RayCluster.wait_nodes``)."""
    proc = subprocess.run([str(BIN / "glia-edge"), *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=os.environ.copy(), timeout=timeout)
    return CliResult(proc.returncode, proc.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """A Ray cluster of one or more nodes on this machine, reachable only through loopback."""

    def __init__(self, head_ip: str = "127.0.0.2", cpus: int = 2, resources: str | None = None) -> None:
        self.head_ip = head_ip
        self.port = free_port()
        self.address = f"{head_ip}:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="gr", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.procs: list[subprocess.Popen] = []
        self._logs: list = []
        args = ["--head", f"--port={self.port}", "--include-dashboard=false"]
        self._start(head_ip, cpus, resources, args)

    def _start(self, ip: str, cpus: int, resources: str | None, extra: list[str]) -> None:
        log = open(Path(self.temp_dir) / f"ray-start-{len(self.procs)}.log", "w")
        self._logs.append(log)
        cmd = [str(BIN / "ray"), "start", "--block", f"--node-ip-address={ip}", f"--num-cpus={cpus}",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats", *extra]
        if resources:
            cmd.append(f"--resources={resources}")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def add_node(self, ip: str, cpus: int, resources: str | None = None) -> None:
        self._start(ip, cpus, resources, [f"--address={self.address}"])

    def wait_nodes(self, count: int, timeout: float = 60.0) -> list[dict]:
        """Block until ``count`` nodes are alive; returns their ``ray.nodes()`` entries.

        Asked from a child process: this test process never connects to Ray itself, because
        connecting and disconnecting a driver repeatedly in one process can crash it later
        (Ray's core worker leaves threads that outlive ``ray.shutdown``; ray-project/ray#31145).
        """
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start exited with {proc.returncode}; see {self.temp_dir}")
            probe = subprocess.run([sys.executable, "-c", _NODES_PROBE, self.address], env=self.env,
                                   capture_output=True, text=True, timeout=max(5.0, deadline - time.monotonic() + 30))
            if probe.returncode == 0:
                alive = json.loads(probe.stdout.strip().splitlines()[-1])
                if len(alive) >= count:
                    return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes not up after {timeout:.0f}s; last probe:\n{probe.stderr[-2000:]}")
            time.sleep(0.5)

    def descendants(self) -> list:
        """Every live process this cluster started (``psutil.Process`` objects)."""
        import psutil

        out = []
        for proc in self.procs:
            try:
                out.extend(psutil.Process(proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return out

    def stop(self) -> None:
        """SIGTERM every process the cluster started (by pid), then SIGKILL what is left after 5 s.

        Signalling only the blocking ``ray start`` would also work, but after a job has run it waits
        about 30 s for workers to exit on their own.
        """
        import psutil

        procs = [psutil.Process(p.pid) for p in self.procs if p.poll() is None] + self.descendants()
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=10)
        for proc in self.procs:
            proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def write_images(root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` tiny images (PNG and JPEG, a few sizes, some grayscale) of smooth random texture."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = (int(rng.integers(24, 49)), int(rng.integers(24, 65)))
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
        if i % 7 == 0:
            img = img.convert("L")
        path = root / (f"img{i:04d}.png" if i % 2 else f"img{i:04d}.jpg")
        img.save(path)
        paths.append(path)
    return paths


def write_bad_files(root: Path) -> list[str]:
    """Broken inputs beside the good ones (truncated, empty, not an image, a decompression bomb)."""
    import struct
    import zlib

    good = next(root.glob("*.jpg")).read_bytes()
    (root / "bad_truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "bad_empty.png").write_bytes(b"")
    (root / "bad_text.jpg").write_text("not an image\n")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    (root / "bad_bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                                        + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return ["bad_truncated.jpg", "bad_empty.png", "bad_text.jpg", "bad_bomb.png"]
