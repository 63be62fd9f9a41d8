"""Slow: ``benchmarks/ray_bench.py`` runs end to end on a tiny input against a real cluster (as its
own process, the way it is run) and reports every figure it promises; the figures themselves are
measured on a quiet machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._ray_fixtures import RayCluster  # before ray is imported: sets its auth env

pytest.importorskip("ray.serve")


@pytest.mark.slow
def test_ray_bench_runs_on_tiny_input(tmp_path: Path) -> None:
    cluster = RayCluster(cpus=2)
    try:
        cluster.wait_nodes(1)
        out = tmp_path / "bench.json"
        res = subprocess.run([sys.executable, "-m", "glia_edge.benchmarks.ray_bench", "--images", "8", "--size", "64x48",
                              "--requests", "6", "--clients", "2", "--ray", cluster.address, "--json", str(out)],
                             capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    finally:
        cluster.stop()
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ray_overhead_ms_per_image:" in res.stdout and "serve_batching_off:" in res.stdout
    figures = json.loads(out.read_text())
    for key in ("plain_images_per_s", "plain_1thread_images_per_s", "ray_1_actor_images_per_s",
                "ray_2_actor_images_per_s", "ray_1_actor_steady_images_per_s"):
        assert figures[key] > 0, key
    assert set(figures["per_node_extrapolation_images_per_s"]) == {"4", "8", "16", "32", "64"}
    for mode in ("on", "off"):
        serve = figures[f"serve_batching_{mode}"]
        assert 0 < serve["p50_ms"] <= serve["p99_ms"] and serve["requests_per_s"] > 0
