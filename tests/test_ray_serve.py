"""``glia-edge serve`` on a real Ray cluster, over real HTTP on 127.0.0.1 (no mocks).

Concurrent clients get the scores ``Backend.predict`` gives, and batching gathers them; bad
bodies, server-side paths, oversize bodies and oversize images get JSON errors with 4xx statuses.
The server runs as a separate process (the CLI, under ``-q``) and is stopped with SIGTERM, which
lets the requests in flight finish and exits 143 with one line, as Ctrl-C does (130) while Ray starts.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests._ray_fixtures import BIN, RayCluster, free_port, write_bad_files, write_images

pytest.importorskip("ray.serve")

MAX_BODY_MB = 0.25
MAX_PIXELS = 1_000_000
#: The running server's process and log, for the test that stops it.
SERVER: dict[str, object] = {}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("serve_images")
    paths = write_images(root, 24, seed=1)
    write_bad_files(root)
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    cluster = RayCluster(cpus=2)
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve_log") / "serve.log"
    log = open(log_path, "w")
    proc = None
    try:
        cluster.wait_nodes(1)
        proc = subprocess.Popen([str(BIN / "glia-edge"), "-q", "serve", "--ray", cluster.address, "--port", str(port),
                                 "--max-body-mb", str(MAX_BODY_MB), "--max-pixels", str(MAX_PIXELS),
                                 "--max-batch-size", "8", "--batch-wait-ms", "50"],
                                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if request(f"{base}/healthz")[0] == 200:
                    break
            except (OSError, ValueError):  # not listening yet, or Serve's proxy answering before the app is up
                pass
            assert time.monotonic() < deadline, "server not healthy after 150 s:\n" + log_path.read_text()
            time.sleep(0.5)
        SERVER.update(proc=proc, log=log_path)
        yield base
        if proc.poll() is None:  # not stopped by the last test
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 143, log_path.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        cluster.stop()


def request(url: str, body: bytes | None = None, method: str | None = None,
            ctype: str = "application/octet-stream") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                 headers={"Content-Type": ctype} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health(server: str) -> None:
    from glia_edge.meta import sha256_file
    from glia_edge.scale.artifact import default_model

    from glia_edge.formats import FORMATS

    default, pick = default_model()  # what `glia-edge score` runs on this install

    status, body = request(f"{server}/healthz")
    assert status == 200 and body["status"] == "ok"
    assert body["model"] == default.name and body["precision"] == "fp32"
    assert body["runtime"] == FORMATS[pick["runtime"]].label  # as score's JSON names it
    assert body["artifact_sha256"] == sha256_file(default)


def test_concurrent_clients_get_predict_scores_in_batches(server: str, images: list[Path]) -> None:
    import glia_edge

    with glia_edge.load() as backend:
        expected = backend.predict(images)
    bodies = [p.read_bytes() for p in images]
    with ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(pool.map(lambda b: request(f"{server}/score", b), bodies * 2))
    for i, (status, body) in enumerate(replies):
        assert status == 200, body
        assert body["score"] == pytest.approx(expected[i % len(images)], abs=1e-4)
        assert body["precision"] == "fp32" and body["crops"] == 1
    assert max(body["batch"] for _, body in replies) > 1, "concurrent requests were never batched"


@pytest.mark.parametrize("body,ctype,status,words", [
    (b"", "application/octet-stream", 400, "empty body"),
    (b"this is not an image", "application/octet-stream", 422, "not an image"),
    (json.dumps({"path": "/etc/passwd"}).encode(), "application/json", 415, "paths are not accepted"),
    (b"path=/etc/passwd", "application/x-www-form-urlencoded", 415, "paths are not accepted"),
    (b"/etc/passwd", "text/plain", 415, "paths are not accepted"),
])
def test_bad_bodies_get_json_4xx(server: str, body: bytes, ctype: str, status: int, words: str) -> None:
    got, reply = request(f"{server}/score", body, ctype=ctype)
    assert got == status and reply["status"] == status
    assert words in reply["error"]


def _corrupt_tiff() -> bytes:
    """A TIFF whose tag makes Pillow 13 raise TypeError (not OSError) inside load(); found by fuzzing."""
    buf = io.BytesIO()
    Image.fromarray(np.full((150, 200, 3), 128, np.uint8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    data[51], data[72] = 242, 7
    return bytes(data)


def test_an_image_pillow_fails_on_oddly_is_422(server: str) -> None:
    status, reply = request(f"{server}/score", _corrupt_tiff(), ctype="image/tiff")
    assert status == 422 and "corrupt image" in reply["error"]


def test_bad_routes_and_methods(server: str) -> None:
    try:
        urllib.request.urlopen(f"{server}/score", timeout=60)  # GET
        raise AssertionError("GET /score answered 2xx")
    except urllib.error.HTTPError as exc:
        assert exc.code == 405 and exc.headers["Allow"] == "POST"  # RFC 9110: a 405 lists what is allowed
    status, reply = request(f"{server}/files/etc/passwd")
    assert status == 404 and "no route" in reply["error"]


def test_truncated_image_is_422(server: str, images: list[Path]) -> None:
    status, reply = request(f"{server}/score", (images[0].parent / "bad_truncated.jpg").read_bytes())
    assert status == 422 and "truncated" in reply["error"]


def test_oversize_body_and_images_are_413(server: str, images: list[Path]) -> None:
    big = np.random.default_rng(0).integers(0, 256, int(MAX_BODY_MB * 2**20) + 1000, dtype=np.uint8).tobytes()
    status, reply = request(f"{server}/score", big)
    assert status == 413 and "over the limit" in reply["error"]
    buf = io.BytesIO()
    Image.new("RGB", (1500, 1000), (90, 120, 150)).save(buf, "PNG")  # 1.5 MP in a few kB
    assert len(buf.getvalue()) < MAX_BODY_MB * 2**20
    status, reply = request(f"{server}/score", buf.getvalue())
    assert status == 413 and "1500000 pixels" in reply["error"]
    status, reply = request(f"{server}/score", (images[0].parent / "bad_bomb.png").read_bytes())
    assert status == 413 and "pixels" in reply["error"]
    assert request(f"{server}/score", images[0].read_bytes())[0] == 200  # still serving


def test_sigterm_lets_requests_in_flight_finish_then_exits_143(server: str, images: list[Path]) -> None:
    """Runs last: it stops the module's server. Requests sent before the signal are answered (the
    application is deleted, its replicas drain, before Serve shuts down); later ones may be refused."""
    proc, log_path = SERVER["proc"], SERVER["log"]

    def send(body: bytes) -> tuple[float, object]:
        started = time.monotonic()
        try:
            return started, request(f"{server}/score", body)[0]
        except (OSError, ValueError) as exc:  # refused or reset after the signal
            return started, repr(exc)

    bodies = [p.read_bytes() for p in images] * 4
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(send, b) for b in bodies]
        futures[0].result()
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        replies = [f.result() for f in futures]
    in_flight = [status for started, status in replies if started < signalled - 0.1]
    assert in_flight and all(status == 200 for status in in_flight), in_flight
    assert proc.wait(timeout=60) == 143
    log = log_path.read_text()
    assert "terminated: the server stopped" in log, log
    # -q: neither Serve's INFO lines nor its misleading "New http_options will not be applied"
    assert "Connecting to existing Serve app" not in log and " INFO " not in log, log


def test_ctrl_c_while_ray_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(BIN / "glia-edge"), "serve", "--num-cpus", "1", "--port", str(free_port())],
                                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            time.sleep(3)  # starting the local Ray instance (or, on a fast machine, already serving)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 130, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "interrupted: the server stopped" in log_path.read_text()


def test_a_replica_that_cannot_load_is_one_line_with_its_reason(tmp_path: Path) -> None:
    """Metadata that reads fine but a model the replicas cannot open (its external data is missing):
    Serve's 40-line traceback becomes one ``error:`` line with the backend's reason, exit 2."""
    onnx = pytest.importorskip("onnx")
    import glia_edge
    from tests._ray_fixtures import run_cli

    model = onnx.load(str(Path(glia_edge.__file__).parent / "weights" / "glia_vit_nano.synthetic.fp32.onnx"))
    broken = tmp_path / "ext.onnx"
    onnx.save_model(model, str(broken), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    result = run_cli("-q", "serve", "--num-cpus", "1", "--port", free_port(), "--model", broken, timeout=300)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: the replicas could not start: "), result.output
    assert "could not open it" in lines[0] and "Traceback" not in result.output, result.output
