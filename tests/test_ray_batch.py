"""``glia-edge batch`` on a real Ray cluster (no mocks): parity with ``glia-edge score``, every
input kind, resume after a SIGKILLed driver, and an actor SIGKILLed mid-run.

One cluster (``ray start --head`` on 127.0.0.2, 2 CPUs) serves the whole module; each test is a
separate Ray job on it. Images are tiny, so the default model's inference dominates.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests._ray_fixtures import BIN, CliResult, RayCluster, run_cli, write_bad_files, write_images  # before ray is imported: sets its auth env

pytest.importorskip("ray.data")

import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from typer.testing import CliRunner

from glia_edge.cli import app
from glia_edge.scale.output import parts_dir_of


N_GOOD = 200


@pytest.fixture(scope="module")
def cluster():
    ray_cluster = RayCluster(cpus=2)
    try:
        ray_cluster.wait_nodes(1)
        yield ray_cluster
    finally:
        ray_cluster.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray_images")
    write_images(root, N_GOOD)
    write_bad_files(root)
    return root


@pytest.fixture(scope="module")
def reference(folder: Path) -> dict[str, dict]:
    """``glia-edge score`` on the same folder: path -> row (JSON keeps full float precision)."""
    res = CliRunner().invoke(app, ["score", str(folder), "--format", "json"])
    assert res.exit_code == 1, res.output  # the bad files make it exit 1
    rows = json.loads(res.stdout)["results"]
    assert len(rows) == N_GOOD + 4
    return {r["path"]: r for r in rows}


def batch(*args: object) -> CliResult:
    """``glia-edge batch`` as its own process: each job is a separate Ray driver, as for a user."""
    return run_cli("batch", *args)


def read_rows(path: Path) -> list[dict]:
    table = pq.read_table(path) if path.suffix == ".parquet" else pa_csv.read_csv(path)
    return table.to_pylist()


def assert_matches_reference(rows: list[dict], reference: dict[str, dict]) -> None:
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a path appears twice"
    assert set(paths) == set(reference)
    for row in rows:
        ref = reference[row["path"]]
        if ref["status"] == "ok":
            assert row["status"] == "ok", row
            assert row["score"] == pytest.approx(ref["score"], abs=1e-4)
            assert row["crops"] == ref["crops"]
        else:
            assert row["status"] == "error" and row["score"] is None
            assert row["error"] == ref["error"], row["path"]


def test_batch_equals_score(cluster: RayCluster, folder: Path, reference: dict, tmp_path: Path) -> None:
    from glia_edge.meta import sha256_file
    from glia_edge.scale.artifact import default_model

    default, _ = default_model()  # what `glia-edge score` runs on this install

    out = tmp_path / "scores.parquet"
    res = batch(folder, "-o", out, "--ray", cluster.address, "--commit-rows", 50)
    assert res.exit_code == 1, res.output  # some inputs failed, as with score
    assert "scored 200 of 204 inputs; 4 could not be read" in res.output
    for name in ("bad_truncated.jpg", "bad_empty.png", "bad_text.jpg", "bad_bomb.png"):
        assert f"error: {folder / name}:" in res.output
    rows = read_rows(out)
    assert [r["path"] for r in rows] == sorted(reference)  # input order: the folder's sorted files
    assert_matches_reference(rows, reference)
    assert {r["artifact_sha256"] for r in rows} == {sha256_file(default)}
    assert {(r["model"], r["format"], r["precision"]) for r in rows} == {
        (default.name, "onnx", "fp32")}
    assert not (tmp_path / ".scores.parquet.parts").exists()
    again = batch(folder, "-o", out, "--ray", cluster.address)
    assert again.exit_code == 2 and "--overwrite" in again.output  # a finished output is not clobbered


def test_manifests_uris_globs_and_csv_output(cluster: RayCluster, folder: Path, reference: dict,
                                              tmp_path: Path) -> None:
    """A CSV manifest (relative paths), a Parquet manifest, a file:// URI folder and a glob, into CSV."""
    import pyarrow as pa

    names = sorted(p.name for p in folder.iterdir())
    sub = tmp_path / "sub"
    sub.mkdir()
    for name in names[:6]:
        shutil.copy(folder / name, sub / name)
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"sub/{n},x\n" for n in names[:3]) + "sub/missing.jpg,y\n")
    pq.write_table(pa.table({"path": [str(folder / n) for n in names[10:14]]}), tmp_path / "list.parquet")
    uri_dir = tmp_path / "uri"
    uri_dir.mkdir()
    for name in names[20:24]:
        shutil.copy(folder / name, uri_dir / name)
    out = tmp_path / "scores.csv"
    res = batch(f"file://{uri_dir}", str(folder / "img000[0-1].*"), str(tmp_path / "nothing*.jpg"),
                "--manifest", tmp_path / "list.csv", "--manifest", tmp_path / "list.parquet",
                "-o", out, "--ray", cluster.address)
    assert res.exit_code == 1, res.output
    rows = {r["path"]: r for r in read_rows(out)}
    expected = ([f"file://{uri_dir}/{n}" for n in names[20:24]] + [str(folder / "img0000.jpg"), str(folder / "img0001.png")]
                + [str(tmp_path / "sub" / n) for n in names[:3]] + [str(tmp_path / "sub" / "missing.jpg")]
                + [str(folder / n) for n in names[10:14]] + [str(tmp_path / "nothing*.jpg")])
    assert sorted(rows) == sorted(expected)
    assert rows[str(tmp_path / "nothing*.jpg")]["error"] == "no file or folder matches this pattern"
    assert rows[str(tmp_path / "sub" / "missing.jpg")]["error"] == "file not found"
    for name in names[20:24]:  # read through pyarrow's filesystem: same score as the local file
        ref = reference[str(folder / name)]
        row = rows[f"file://{uri_dir}/{name}"]
        assert row["status"] == ref["status"]
        if ref["status"] == "ok":
            assert row["score"] == pytest.approx(ref["score"], abs=1e-4)
        else:
            assert row["error"] == ref["error"]


def _parts(out: Path) -> list[Path]:
    return sorted(parts_dir_of(out).glob("part-*.parquet"))


@contextmanager
def _driver_with_parts(cluster: RayCluster, folder: Path, out: Path, parts: int) -> Iterator[subprocess.Popen]:
    """A ``glia-edge batch`` driver process, handed over once it has committed ``parts`` parts
    (the block then stops it its own way); killed if the block leaves it running."""
    cmd = [str(BIN / "glia-edge"), "batch", str(folder), "-o", str(out), "--ray", cluster.address,
           "--commit-rows", "8", "--rows-per-task", "8"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while len(_parts(out)) < parts:
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, f"{parts} committed part(s) not there in 120 s"
            time.sleep(0.05)
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()


def test_resume_after_driver_sigkill(cluster: RayCluster, folder: Path, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "resumed.parquet"
    with _driver_with_parts(cluster, folder, out, parts=2) as driver:
        os.kill(driver.pid, signal.SIGKILL)  # a real kill: no handler, no cleanup
        assert driver.wait(timeout=30) == -signal.SIGKILL
    assert not out.exists()
    first = {r["path"]: r for p in _parts(out) for r in pq.read_table(p).to_pylist()}
    assert 0 < len(first) < len(reference), "the kill must land mid-run"

    res = batch(folder, "-o", out, "--ray", cluster.address)
    assert res.exit_code == 1, res.output
    assert f"({len(first)} from an earlier run)" in res.output
    rows = read_rows(out)
    assert_matches_reference(rows, reference)  # every input exactly once
    for row in rows:  # rows committed before the kill were kept, not scored again
        if row["path"] in first:
            assert row["worker_pid"] == first[row["path"]]["worker_pid"]
    assert not _parts(out)


def test_driver_sigterm_says_how_to_resume(cluster: RayCluster, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "stopped.parquet"
    with _driver_with_parts(cluster, folder, out, parts=1) as driver:
        driver.send_signal(signal.SIGTERM)  # docker stop, systemd, a scheduler
        assert driver.wait(timeout=60) == 143
        err = driver.stderr.read().decode()
    assert "terminated: scored rows are kept in" in err and "rerun the same command to resume" in err, err
    assert "SIGTERM received" not in err  # before: Ray's native stack trace and exit 15
    assert _parts(out) and not out.exists()


def test_actor_sigkill_mid_run_loses_nothing(cluster: RayCluster, folder: Path, reference: dict,
                                             tmp_path: Path) -> None:
    out = tmp_path / "survived.parquet"
    killed: list[int] = []

    def kill_an_actor() -> None:
        # The actor to kill is the one whose rows are committed: its pid is in them. (Matching
        # "BatchScorer" in a command line once picked a process that had scored nothing.)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for part in _parts(out):
                try:
                    rows = pq.read_table(part).to_pylist()
                except OSError:  # a part being replaced right now
                    continue
                ours = {proc.pid for proc in cluster.descendants()}  # never a recycled pid outside the cluster
                for pid in {r["worker_pid"] for r in rows if r["status"] == "ok"} & ours:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append(pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_actor, daemon=True)
    killer.start()
    res = batch(folder, "-o", out, "--ray", cluster.address, "--commit-rows", "8", "--rows-per-task", "8",
                "--actors", "1", "--max-restarts", "2", "--task-retries", "2")
    killer.join(timeout=5)
    assert killed, "no actor process was found to kill"
    assert res.exit_code == 1, res.output
    rows = read_rows(out)
    assert_matches_reference(rows, reference)
    pids = {r["worker_pid"] for r in rows if r["status"] == "ok"}
    assert killed[0] in pids and len(pids) >= 2, pids  # the killed actor's rows kept; its successor did the rest


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
