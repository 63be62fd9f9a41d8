"""Helpers for the stream tests: test videos whose middle part degrades (of a still photo, or of a
pan over it so the content moves), and a light real Backend.

``SharpnessBackend`` implements the runtime contract (``Backend._infer``) with a Laplacian
sharpness measure instead of a network, so the monitor's queueing, dropping and threading can be
tested quickly with the real shared preprocessing; the GLIA model itself is exercised by the CLI
test through the ``tiny_checkpoint`` fixture.
"""
from __future__ import annotations

import functools
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from glia_edge.meta import ArtifactMeta, ScoreSpec
from glia_edge.preprocess import PreprocessConfig
from glia_edge.runtimes.base import Backend


def photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.LANCZOS)


def severity(i: int, start: int, end: int) -> float:
    """0 outside [start, end); inside, a triangle rising to 1 at the middle and falling back."""
    if not start <= i < end:
        return 0.0
    mid = (start + end - 1) / 2
    return 1.0 - abs(i - mid) / (mid - start + 1)


def degraded_frame(base: Image.Image, s: float, rng: np.random.Generator, noise: float = 20.0) -> np.ndarray:
    """RGB uint8: ``base`` blurred (sigma up to 4) and noised (sigma up to ``noise``) by severity ``s``."""
    if s <= 0:
        return np.asarray(base).copy()
    arr = np.asarray(base.filter(ImageFilter.GaussianBlur(4.0 * s)), np.float32)
    return np.clip(arr + rng.normal(0.0, noise * s, arr.shape), 0, 255).astype(np.uint8)


def frames(n: int, start: int, end: int, size: tuple[int, int] = (320, 240), noise: float = 20.0,
           seed: int = 0) -> list[np.ndarray]:
    """``n`` BGR frames of a photo whose frames ``start..end-1`` are progressively degraded."""
    base, rng = photo(size), np.random.default_rng(seed)
    return [degraded_frame(base, severity(i, start, end), rng, noise)[:, :, ::-1].copy() for i in range(n)]


def pan_frames(n: int, start: int = 0, end: int = 0, size: tuple[int, int] = (64, 48), noise: float = 0.0,
               seed: int = 0) -> list[np.ndarray]:
    """``n`` BGR frames of a window panning over a photo (1 px/frame across, 1/3 down, bouncing at the
    edges), so the content moves; frames ``start..end-1`` progressively degraded as in :func:`frames`."""
    w, h = size
    big, rng = np.asarray(photo((w + w // 2, h + h // 2))), np.random.default_rng(seed)

    def bounce(p: float, travel: int) -> int:
        q = p % (2 * travel)
        return int(q if q <= travel else 2 * travel - q)

    out = []
    for i in range(n):
        x, y = bounce(i, w // 2), bounce(i / 3, h // 2)
        window = Image.fromarray(big[y:y + h, x:x + w])
        out.append(degraded_frame(window, severity(i, start, end), rng, noise)[:, :, ::-1].copy())
    return out


def write_video(path: Path, n: int = 90, start: int = 30, end: int = 60, size: tuple[int, int] = (320, 240),
                fps: float = 30.0) -> Path:
    """An MJPG .avi made with OpenCV from :func:`frames`."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for frame in frames(n, start, end, size):
        writer.write(frame)
    writer.release()
    return path


class SharpnessBackend(Backend):
    """Scores crops by Laplacian sharpness (0-100); ``delay`` seconds per batch simulates a slow model."""

    format = "test"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        cfg = PreprocessConfig(short_side=48, crop_size=32)
        meta = ArtifactMeta(preset="sharpness", model_config={}, preprocess=cfg.to_dict(),
                            score=vars(ScoreSpec(name="sharpness", min=0.0, max=100.0)))
        super().__init__("sharpness", meta, batch_size=16)
        self.delay, self.fail, self.batches = delay, fail, 0

    def describe(self) -> str:  # no artifact file to name (watch prints this)
        return "sharpness stand-in"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches += 1
        if self.fail:
            raise RuntimeError("inference device lost")
        if self.delay:
            time.sleep(self.delay)
        g = batch.mean(axis=1)
        lap = g[:, 1:-1, :-2] + g[:, 1:-1, 2:] + g[:, :-2, 1:-1] + g[:, 2:, 1:-1] - 4 * g[:, 1:-1, 1:-1]
        return np.clip(lap.std(axis=(1, 2)) * 200.0, 0.0, 100.0)


class MjpegServer:
    """A live MJPEG-over-HTTP camera: each connection gets ``per_connection`` JPEG frames, then the
    server hangs up; after ``connections`` connections it goes away (connections are refused)."""

    def __init__(self, per_connection: int, connections: int | None = None) -> None:
        import cv2

        jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames(per_connection, 0, 0, size=(64, 48))]
        served = [0]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                served[0] += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for jpg in jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(jpg), jpg))
                    time.sleep(0.01)
                if connections is not None and served[0] >= connections:
                    threading.Thread(target=outer.stop, daemon=True).start()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FileServer:
    """Serves the files of ``folder`` over HTTP (range requests included, so OpenCV can seek): a
    video file at a URL, which has an end, unlike a live stream."""

    def __init__(self, folder: Path) -> None:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeCapture:
    """A stand-in for ``cv2.VideoCapture`` over ``clip``: it reports ``count`` as its frame count
    (0: a live stream), delivers ``per_connection`` frames then fails a read (a dropped
    connection), and seeks (``CAP_PROP_POS_FRAMES``) only when ``seekable``."""

    def __init__(self, clip: list[Any], count: int = 0, per_connection: int | None = None,
                 seekable: bool = True) -> None:
        self.clip, self.count, self.per_connection, self.seekable = clip, count, per_connection, seekable
        self.pos = self.read_here = 0

    def read(self) -> tuple[bool, Any]:
        if self.pos >= len(self.clip) or (self.per_connection is not None and self.read_here >= self.per_connection):
            return False, None
        self.pos, self.read_here = self.pos + 1, self.read_here + 1
        return True, self.clip[self.pos - 1]

    def get(self, prop: int) -> float:
        return {1: float(self.pos), 5: 30.0, 7: float(self.count)}.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        if prop != 1 or not self.seekable:
            return False
        self.pos = int(value)
        return True

    def release(self) -> None:
        pass
