"""Online scoring on Ray Serve: POST image bytes, get a JSON score.

Routes (every reply is JSON):

- ``POST /score`` with the image file's bytes as the body -> ``{"score", "crops", "model",
  "artifact_sha256", "format", "runtime", "precision", "score_name", "min", "max", "batch"}``;
- ``GET /healthz`` -> the model, its precision and ``"status": "ok"``.

Requests carry image bytes only: JSON, form and text bodies are refused with 415, so a request can
never make the server open a path on its own disk. Bodies over ``max_body_bytes`` get 413 before
they are read in full; images whose header declares more than ``max_pixels`` pixels get 413 before
they are decoded (the decompression-bomb guard); empty bodies get 400 and undecodable ones 422.

With batching on, concurrent requests to a replica are gathered by ``@serve.batch`` (up to
``max_batch_size`` images, waiting at most ``batch_wait_s``) and scored in one backend call; with
it off each request is scored alone. Decoding runs in a thread so the replica keeps accepting
requests, and one lock keeps a backend to one inference at a time (OpenVINO's infer request is
not re-entrant).
"""
from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ray import serve

from glia_edge.errors import one_line
from glia_edge.scale.artifact import ArtifactBundle

log = logging.getLogger(__name__)

#: Body types that are not image bytes (a client sending a path or a form gets 415).
REFUSED_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data", "text/")


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of a deployment (CLI options map onto these)."""

    max_body_bytes: int = 20 * 2**20
    max_pixels: int | None = None  # None: the artifact's own limit (its preprocess config), as in score
    crops: int | None = None
    batching: bool = True
    max_batch_size: int = 8
    batch_wait_s: float = 0.01
    threads: int = 1


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


class ScoreServer:
    """The Serve deployment body: one backend per replica, built from the shipped artifact."""

    def __init__(self, bundle: ArtifactBundle, settings: dict[str, Any], backend_options: dict[str, Any]) -> None:
        import glia_edge
        from glia_edge.preprocess import allow_pillow_pixels
        from glia_edge.runtimes import read_meta
        from glia_edge.runtimes.base import thread_option

        self.settings = ServeSettings(**settings)
        path = bundle.materialize()
        self.meta = read_meta(path)
        # The replica's CPU share sets threads where the backend has them (a TensorRT engine has none).
        threads = thread_option(self.meta.format, self.settings.threads)
        self.backend = glia_edge.load(path, **{**threads, **backend_options})
        self.bundle_name, self.sha256 = bundle.name, bundle.sha256
        self.preprocess = self.backend.preprocess_config
        if self.settings.max_pixels:
            self.preprocess = self.preprocess.replace(max_pixels=self.settings.max_pixels)
        allow_pillow_pixels(self.preprocess.max_pixels)  # the replica's own process: --max-pixels governs
        self.lock = threading.Lock()
        self._score_batched.set_max_batch_size(self.settings.max_batch_size)
        self._score_batched.set_batch_wait_timeout_s(self.settings.batch_wait_s)

    # -- HTTP ---------------------------------------------------------------------------------
    async def __call__(self, request: Any) -> Any:
        route = request.url.path.rstrip("/") or "/"
        try:
            if route in ("/healthz", "/health"):
                if request.method not in ("GET", "HEAD"):
                    raise HttpError(405, f"{request.method} not allowed on {route}; use GET", {"Allow": "GET, HEAD"})
                return _json(200, {"status": "ok", **self._identity()})
            if route == "/score":
                if request.method != "POST":
                    raise HttpError(405, f"{request.method} not allowed on /score; POST the image bytes", {"Allow": "POST"})
                return _json(200, await self._score_request(request))
            raise HttpError(404, f"no route {route}; POST /score or GET /healthz")
        except HttpError as exc:
            return _json(exc.status, {"error": exc.message, "status": exc.status}, exc.headers)
        except Exception as exc:  # a bug or a runtime failure: still a JSON answer, and logged whole
            log.exception("%s %s failed", request.method, route)
            return _json(500, {"error": f"internal error: {one_line(exc)}", "status": 500})

    def check_health(self) -> None:
        """Serve's replica health check: the backend must still answer."""
        if self.backend is None:
            raise RuntimeError("backend closed")

    def _identity(self) -> dict[str, Any]:
        from glia_edge.formats import FORMATS

        spec = self.meta.score_spec
        return {"model": self.bundle_name, "artifact_sha256": self.sha256, "format": self.backend.meta.format,
                "runtime": FORMATS[self.backend.format].label, "precision": self.backend.meta.precision, "score_name": spec.name, "min": spec.min, "max": spec.max}

    async def _read_body(self, request: Any) -> bytes:
        ctype = request.headers.get("content-type", "").lower()
        if any(ctype.startswith(t) for t in REFUSED_TYPES):
            raise HttpError(415, f"content type {ctype!r} refused: send the image file's bytes as the body "
                                 "(image/* or application/octet-stream); paths are not accepted")
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HttpError(413, f"body is over the limit of {limit} bytes")
        if not body:
            raise HttpError(400, "empty body: send the image file's bytes")
        return bytes(body)

    def _decode(self, body: bytes) -> np.ndarray:
        """Bytes -> the (n, S, S, 3) uint8 crops ``glia-edge score`` cuts, refusing oversize images
        before decoding their pixels."""
        from PIL import Image

        from glia_edge.errors import ImageLoadError
        from glia_edge.preprocess import crops_uint8

        try:
            with Image.open(io.BytesIO(body)) as probe:
                pixels = probe.width * probe.height
        except Image.DecompressionBombError as exc:  # Pillow's own guard fires first for huge claims
            pixels = bomb_pixels(exc)
            if pixels is None:
                raise HttpError(413, f"image is over the limit of {self.preprocess.max_pixels} pixels") from None
        except Exception:  # unreadable header (any of Pillow's errors): crops_uint8 below gives the reason
            pixels = 0
        if pixels > self.preprocess.max_pixels:
            raise HttpError(413, f"image has {pixels} pixels, over the limit of {self.preprocess.max_pixels}")
        try:
            return crops_uint8(body, self.preprocess, crops=self.settings.crops)
        except ImageLoadError as exc:
            raise HttpError(422, exc.reason) from None

    def _infer(self, images: list[np.ndarray]) -> list[Any]:
        from glia_edge.preprocess import crops_to_float

        with self.lock:  # crops already cut in _decode: only step 5 is left
            return list(self.backend.iter_scores(images, crops=self.settings.crops, cut=crops_to_float,
                                                 decode_workers=0))

    async def _score_request(self, request: Any) -> dict[str, Any]:
        body = await self._read_body(request)
        image = await asyncio.to_thread(self._decode, body)
        if self.settings.batching:
            result, batch = await self._score_batched(image)
        else:
            result, batch = (await asyncio.to_thread(self._infer, [image]))[0], 1
        if not result.ok:
            raise HttpError(422, result.error or "could not score the image")
        return {"score": result.score, "crops": result.crops, "batch": batch, **self._identity()}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # both set per deployment in __init__
    async def _score_batched(self, images: list[np.ndarray]) -> list[tuple[Any, int]]:
        results = await asyncio.to_thread(self._infer, images)
        return [(r, len(images)) for r in results]


def bomb_pixels(exc: Exception) -> int | None:
    """The pixel count in Pillow's ``DecompressionBombError`` ("Image size (N pixels) exceeds limit
    of M pixels ..."), so the reply quotes the configured limit, not Pillow's; None if absent."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else None


def build_app(bundle: ArtifactBundle, settings: ServeSettings, *, replicas: int, replica_cpus: float,
              backend_options: dict[str, Any] | None = None) -> Any:
    """The Serve application: ``replicas`` copies of :class:`ScoreServer`, each on ``replica_cpus`` CPUs."""
    deployment = serve.deployment(ScoreServer, name="glia-edge", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": replica_cpus},
                                  max_ongoing_requests=max(16, 4 * settings.max_batch_size),
                                  health_check_period_s=10,
                                  # requests take milliseconds: stopping need not wait Serve's default 20 s
                                  graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=5)
    return deployment.bind(bundle, asdict(settings), backend_options or {})
