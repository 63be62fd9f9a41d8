"""Slow: a two-node Ray cluster on one machine (``ray start --head`` plus ``ray start --address``,
each node with its own CPUs and a resource of its own, on 127.0.0.2 and 127.0.0.3): one
``glia-edge batch`` job scores rows on both nodes and its output equals ``glia-edge score``'s.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._ray_fixtures import RayCluster, run_cli, write_images  # before ray is imported: sets its auth env

pytest.importorskip("ray.data")

import pyarrow.parquet as pq  # noqa: E402
from typer.testing import CliRunner

from glia_edge.cli import app



@pytest.mark.slow
def test_two_nodes_both_score(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    write_images(folder, 60, seed=2)
    reference = {r["path"]: r for r in json.loads(
        CliRunner().invoke(app, ["score", str(folder), "--format", "json"]).stdout)["results"]}
    cluster = RayCluster(head_ip="127.0.0.2", cpus=1, resources='{"head_node": 1}')
    try:
        cluster.add_node("127.0.0.3", cpus=1, resources='{"second_node": 1}')
        nodes = cluster.wait_nodes(2)
        by_ip = {n["NodeManagerAddress"]: n["NodeID"] for n in nodes}
        assert set(by_ip) == {"127.0.0.2", "127.0.0.3"}
        assert {k for n in nodes for k in n["Resources"] if k.endswith("_node")} == {"head_node", "second_node"}
        out = tmp_path / "two_nodes.parquet"
        # 2 actors x 0.75 CPU: one fits on each 1-CPU node, beside a 0.25-CPU decode task.
        res = run_cli("batch", folder, "-o", out, "--ray", cluster.address, "--actors", "2", "--rows-per-task", "4")
        assert res.exit_code == 0, res.output
        rows = pq.read_table(out).to_pylist()
    finally:
        cluster.stop()
    assert sorted(r["path"] for r in rows) == sorted(reference)
    for row in rows:
        assert row["score"] == pytest.approx(reference[row["path"]]["score"], abs=1e-4)
    per_node = {node: sum(r["node"] == node for r in rows) for node in by_ip.values()}
    assert all(count > 0 for count in per_node.values()), per_node
