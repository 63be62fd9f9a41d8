"""Benchmark of scale-out on Ray: batch throughput, Ray's per-image overhead, and Serve latency.

Prints (and with ``--json`` writes) on this machine:

1. images/s of plain scoring (the ``glia-edge score`` path: one process, ``Backend.iter_scores``),
   with the runtime's default threads and with one thread (the per-core rate);
2. images/s of ``glia-edge batch`` on a local Ray instance with 1 and 2 actors, end to end, and
   its steady rate from two job sizes (the slope, so actor start-up and model loading cancel out);
3. Ray's overhead per image: the steady per-image time with one actor minus plain one-thread time;
4. what a node of N cores would give: actors per node (the fractional-CPU plan) x the measured
   per-core rate x Ray's measured efficiency;
5. Ray Serve p50/p99 latency and requests/s with batching on and off, from concurrent clients on
   127.0.0.1.

Run on a quiet machine: ``python -m glia_edge.benchmarks.ray_bench --images 400``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("ray_bench")


def make_images(root: Path, count: int, size: tuple[int, int]) -> list[str]:
    """``count`` JPEGs of smooth random texture at ``size`` (width, height)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        base = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        path = root / f"bench{i:05d}.jpg"
        Image.fromarray(base).resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
        out.append(str(path))
    return out


def plain_rate(model: Path | None, paths: list[str], threads: int | None) -> float:
    """Images/s of ``iter_scores`` over ``paths`` after one warm-up image (model load excluded)."""
    import glia_edge

    options = {"threads": threads} if threads else {}
    with glia_edge.load(model, **options) as backend:
        list(backend.iter_scores(paths[:1]))
        start = time.perf_counter()
        results = list(backend.iter_scores(paths))
        elapsed = time.perf_counter() - start
    assert all(r.ok for r in results)
    return len(paths) / elapsed


def ray_job_seconds(model: Path | None, paths: list[str], actors: int, out: Path) -> float:
    from glia_edge.scale.batch import BatchConfig, run_batch

    cfg = BatchConfig(output=out, fmt="parquet", model=model, actors=actors, overwrite=True, progress=False)
    start = time.perf_counter()
    summary = run_batch(paths, {}, cfg)
    assert summary.failed == 0 and summary.total == len(paths)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_latency(model: Path | None, bodies: list[bytes], batching: bool, clients: int, port: int) -> dict[str, float]:
    """p50/p99 latency (ms) and requests/s of ``len(bodies)`` POSTs from ``clients`` threads."""
    from ray import serve

    from glia_edge.scale.artifact import ArtifactBundle
    from glia_edge.scale.cluster import cluster_cpus, plan_resources
    from glia_edge.scale.serve import ServeSettings, build_app
    from glia_edge.scale.artifact import default_model

    plan = plan_resources(cluster_cpus(), 1)
    path, pick = (model, {}) if model else default_model()
    bundle = ArtifactBundle.from_path(path)
    settings = ServeSettings(batching=batching, threads=plan.threads)
    serve.run(build_app(bundle, settings, replicas=1, replica_cpus=plan.actor_cpus, backend_options=pick),
              name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/score"

    def post(body: bytes) -> float:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
        start = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
        return time.perf_counter() - start

    for body in bodies[:clients]:  # warm-up
        post(body)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = sorted(pool.map(post, bodies))
    wall = time.perf_counter() - start
    serve.delete("bench")
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "requests_per_s": len(bodies) / wall}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="Images in the large batch job.")
    parser.add_argument("--small", type=int, default=0, help="Images in the small job (default: a quarter).")
    parser.add_argument("--size", default="640x480", help="Width x height of the generated JPEGs.")
    parser.add_argument("--model", type=Path, default=None, help="Artifact (default: packaged model).")
    parser.add_argument("--requests", type=int, default=200, help="Serve requests per setting.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent Serve clients.")
    parser.add_argument("--skip-serve", action="store_true", help="Only the batch figures.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--ray", default=None, help="Ray cluster address (default: a local instance on all cores).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import ray

    from glia_edge.scale.cluster import connect, plan_resources

    width, height = (int(v) for v in args.size.split("x"))
    small = args.small or max(2, args.images // 4)
    cores = os.cpu_count() or 1
    figures: dict[str, Any] = {"images": args.images, "size": args.size, "cores": cores}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        paths = make_images(Path(tmp) / "images", args.images, (width, height))
        figures["plain_images_per_s"] = plain_rate(args.model, paths, None)
        figures["plain_1thread_images_per_s"] = plain_rate(args.model, paths, 1)
        connect(args.ray, num_cpus=None if args.ray else cores)
        try:
            for actors in (1, 2):
                big = ray_job_seconds(args.model, paths, actors, Path(tmp) / f"a{actors}.parquet")
                little = ray_job_seconds(args.model, paths[:small], actors, Path(tmp) / f"s{actors}.parquet")
                figures[f"ray_{actors}_actor_images_per_s"] = args.images / big
                figures[f"ray_{actors}_actor_steady_images_per_s"] = (args.images - small) / max(big - little, 1e-9)
            steady_per_image = 1 / figures["ray_1_actor_steady_images_per_s"]
            figures["ray_overhead_ms_per_image"] = 1000 * (steady_per_image - 1 / figures["plain_1thread_images_per_s"])
            efficiency = figures["ray_1_actor_steady_images_per_s"] / figures["plain_1thread_images_per_s"]
            figures["per_node_extrapolation_images_per_s"] = {
                n: plan_resources(n).actors * figures["plain_1thread_images_per_s"] * efficiency
                for n in (4, 8, 16, 32, 64)}
            if not args.skip_serve:
                from ray import serve

                port = free_port()
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                bodies = [Path(paths[i % len(paths)]).read_bytes() for i in range(args.requests)]
                for batching in (True, False):
                    figures[f"serve_batching_{'on' if batching else 'off'}"] = serve_latency(
                        args.model, bodies, batching, args.clients, port)
                serve.shutdown()
        finally:
            ray.shutdown()
    for key, value in figures.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
