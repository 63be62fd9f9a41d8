"""Frame sources through OpenCV: a video file, a camera index, an RTSP/HTTP URL or a GStreamer pipeline.

``VideoSource(spec)`` iterates :class:`Frame` objects (BGR uint8, as OpenCV decodes them). A file
ends at its last frame and can be played at its own frame rate (``realtime=True``, like a camera)
or read as fast as the consumer takes frames. So does a URL whose stream reports a frame count (a
video file served over HTTP): it is *finite*, and reaching that count is its end, not a drop.
Live sources (camera, URL, pipeline) that drop are reopened with exponential backoff (a finite URL
resumes at the frame it reached); when they do not come back a :class:`SourceError` says so. The
reconnection budget is spent across drops and refilled only once a connection has stayed up for
``stable_s`` seconds, so a source that keeps dropping right after reconnecting gives up.
GStreamer pipelines get ``appsink drop=true max-buffers=1`` so a slow reader sees the newest frame
instead of a growing backlog. ``close()`` from any thread stops the iteration within one read
(network reads time out after ``read_timeout_s``).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from glia_edge.errors import GliaError

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
APPSINK = "appsink drop=true max-buffers=1 sync=false"


class SourceError(GliaError, RuntimeError):
    """A frame source cannot be opened, or a live one disconnected and did not come back."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` is HxWx3 uint8 BGR; ``timestamp`` is media time in seconds for
    a file or finite URL and Unix time for live sources; ``index`` counts frames delivered (across
    reconnects)."""

    image: np.ndarray
    timestamp: float
    index: int


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "file" | "camera" | "url" | "gstreamer"
    target: str | int

    @property
    def live(self) -> bool:
        return self.kind != "file"

    @property
    def name(self) -> str:
        """The source for messages, with any password in a URL masked."""
        if self.kind == "camera":
            return f"camera {self.target}"
        # Up to the last "@" before the path, as FFmpeg splits it: a password may hold "@".
        return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", str(self.target))


def parse_source(source: str | int | Path) -> SourceSpec:
    """Tell a camera index, URL, GStreamer pipeline (contains ``!`` and is no existing file) and file path apart."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return SourceSpec("camera", int(source))
    text = str(source).strip()
    if not text:  # Path("") is ".", which would read as "video file not found"
        raise SourceError("empty source")
    if text.lower().startswith(URL_SCHEMES):
        return SourceSpec("url", text)
    if "!" in text and not Path(text).exists():  # a file may have "!" in its name
        return SourceSpec("gstreamer", gstreamer_pipeline(text))
    return SourceSpec("file", text)


def gstreamer_pipeline(description: str) -> str:
    """Make a pipeline end in an appsink that keeps only the newest BGR frame."""
    text = description.strip()
    if "appsink" not in text:
        return f"{text} ! videoconvert ! video/x-raw,format=BGR ! {APPSINK}"
    if not re.search(r"appsink[^!]*\bdrop=", text):
        text = re.sub(r"\bappsink\b", APPSINK, text, count=1)
    return text


def _has_gstreamer(cv2: Any) -> bool:
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() == "YES")


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise SourceError("OpenCV is needed for video sources: pip install 'glia-edge[camera]'") from exc
    return cv2


class VideoSource:
    """Iterate frames of a file, camera, URL or GStreamer pipeline; see the module docstring."""

    def __init__(self, source: str | int | Path, *, realtime: bool = False, reconnect_attempts: int = 5,
                 backoff: tuple[float, float] = (0.5, 8.0), open_timeout_s: float = 10.0,
                 read_timeout_s: float = 5.0, max_frames: int | None = None, stable_s: float = 10.0,
                 opener: Callable[[SourceSpec], Any] | None = None) -> None:
        self.spec = parse_source(source)
        self.max_frames = max_frames
        self._realtime = realtime
        self.realtime = realtime and not self.spec.live  # live sources set their own pace; see open()
        self.reconnect_attempts = reconnect_attempts
        self.backoff = backoff
        self.stable_s = stable_s
        self.timeouts_ms = (int(open_timeout_s * 1000), int(read_timeout_s * 1000))
        self._opener = opener or self._open_cv
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._reading = False
        self._cap: Any = None
        self.fps: float | None = None
        self.frame_count: int | None = None
        self.frames = 0
        self.reconnects = 0
        self.end_reason = ""
        self._attempts = 0  # reconnection attempts spent since the last connection that held
        self._delay = backoff[0]
        self._connected_at = 0.0
        self._last_failure = ""
        self._resumed_at: int | None = None  # a finite URL reopened at this frame, none read since

    # -- opening -----------------------------------------------------------------------------
    def _open_cv(self, spec: SourceSpec) -> Any:
        cv2 = _import_cv2()
        if spec.kind == "file":
            path = Path(str(spec.target))
            if path.is_dir():
                raise SourceError(f"{spec.target}: is a folder; watch reads a video file, camera index, URL or "
                                  "GStreamer pipeline")
            if not path.is_file():
                raise SourceError(f"{path}: video file not found")
            cap = cv2.VideoCapture(str(path))
        elif spec.kind == "camera":
            cap = cv2.VideoCapture(int(spec.target))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        elif spec.kind == "gstreamer":
            if not _has_gstreamer(cv2):
                raise SourceError("this OpenCV build has no GStreamer support (the pip opencv-python wheels lack "
                                  "it): use an OpenCV built with GStreamer (distro python3-opencv, JetPack) or "
                                  "give the stream's URL instead")
            cap = cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
        else:
            open_ms, read_ms = self.timeouts_ms
            cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms])
        if not cap.isOpened():
            cap.release()
            what = {"file": "cannot decode it as video (unsupported format or corrupt file)",
                    "camera": "cannot open it (no such device, no permission, or in use)",
                    "url": "cannot connect or open the stream", "gstreamer": "the pipeline failed to start"}
            raise SourceError(f"{spec.name}: {what[spec.kind]}")
        return cap

    def open(self) -> "VideoSource":
        """Open now (iteration opens lazily); raises :class:`SourceError` with the reason."""
        if self._cap is None:
            self._cap = self._opener(self.spec)
            fps = float(self._cap.get(5) or 0.0)  # cv2.CAP_PROP_FPS
            self.fps = fps if 0.0 < fps < 1000.0 else None
            count = int(self._cap.get(7) or 0)  # cv2.CAP_PROP_FRAME_COUNT
            # A URL that reports a frame count is a finite video (a file over HTTP); live streams
            # report none (FFmpeg gives 0 or a negative sentinel). Cameras and pipelines: never finite.
            self.frame_count = count if count > 0 and self.spec.kind in ("file", "url") else None
            self.realtime = self._realtime and self.finite
            self._connected_at = time.monotonic()
        return self

    @property
    def finite(self) -> bool:
        """Whether the source has an end: a file, or a URL that reported a frame count (known once open)."""
        return self.spec.kind == "file" or self.frame_count is not None

    # -- reading -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        self.open()
        fps = self.fps or 30.0
        if self.realtime and self.fps is None:
            log.warning("%s: frame rate unknown, playing at 30 fps", self.spec.name)
        start = time.monotonic()
        with self._lock:
            self._reading = True
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.frames >= self.max_frames:
                    self.end_reason = f"stopped after {self.frames} frames (max frames)"
                    return
                ok, img = self._cap.read()
                if not ok or img is None:
                    if not self.spec.live:
                        self._end_of_file()
                        return
                    if self.frame_count is not None and self._end_of_stream():
                        return
                    if not self._reconnect() or (self.frame_count is not None and not self._resume()):
                        return
                    continue
                ts = self.frames / fps if self.finite else time.time()
                if self.realtime and self._stop.wait(max(0.0, start + ts - time.monotonic())):
                    break
                yield Frame(img, ts, self.frames)
                self.frames += 1
            self.end_reason = "stopped"
        finally:
            with self._lock:
                self._reading = False
                self._release()

    def _end_of_file(self) -> None:
        name = self.spec.name
        if self.frames == 0:
            raise SourceError(f"{name}: no frame could be decoded (empty, corrupt or unsupported video)")
        if self.frame_count and self.frames < 0.9 * self.frame_count:
            self.end_reason = f"ended early after {self.frames} of {self.frame_count} frames (truncated or corrupt?)"
            log.warning("%s: %s", name, self.end_reason)
        else:
            self.end_reason = f"end of file after {self.frames} frames"
            log.debug("%s: %s", name, self.end_reason)

    def _end_of_stream(self) -> bool:
        """A finite URL stopped delivering: True (its end) when it reached its frame count, or when,
        reopened at the frame it had reached, it had nothing more; False when it dropped mid-way."""
        name = self.spec.name
        if self.frames >= self.frame_count:  # type: ignore[operator]
            self.end_reason = f"end of stream after {self.frames} frames"
            log.debug("%s: %s", name, self.end_reason)
            return True
        if self._resumed_at == self.frames:
            self.end_reason = f"ended early after {self.frames} of {self.frame_count} frames"
            log.warning("%s: %s", name, self.end_reason)
            return True
        return False

    def _resume(self) -> bool:
        """Seek a reopened finite URL to the frame it had reached, so no footage is scored twice;
        False (the stream ends) when the server cannot seek: replaying it from the start would
        pass old frames off as new ones."""
        if self.frames == 0:
            return True
        if self._cap.set(1, self.frames) and int(round(self._cap.get(1))) == self.frames:  # CAP_PROP_POS_FRAMES
            self._resumed_at = self.frames
            log.info("%s: resumed at frame %d of %d", self.spec.name, self.frames, self.frame_count)
            return True
        self.end_reason = (f"ended early after {self.frames} of {self.frame_count} frames: the connection dropped "
                           "and the stream cannot resume at that frame")
        log.warning("%s: %s", self.spec.name, self.end_reason)
        return False

    def _reconnect(self) -> bool:
        """Reopen a dropped live source with backoff; False if stopped meanwhile, raises if it stays down.

        The attempts and the backoff carry over from the previous drop unless the connection that
        just dropped held for ``stable_s``: a source that drops right after every reconnect would
        otherwise get a fresh budget each time and never give up."""
        self._release()
        if time.monotonic() - self._connected_at >= self.stable_s:
            self._attempts, self._delay = 0, self.backoff[0]
        n = self.reconnect_attempts
        while self._attempts < n:
            self._attempts += 1
            delay, self._delay = self._delay, min(self._delay * 2.0, self.backoff[1])
            log.warning("%s: stream dropped after %d frames; reconnecting in %.1f s (attempt %d of %d)",
                        self.spec.name, self.frames, delay, self._attempts, n)
            if self._stop.wait(delay):
                self.end_reason = "stopped"
                return False
            try:
                self._cap = self._opener(self.spec)
            except SourceError as exc:
                self._last_failure = str(exc)
                continue
            self._last_failure = ""
            self._connected_at = time.monotonic()
            self.reconnects += 1
            log.info("%s: reconnected", self.spec.name)
            return True
        self.end_reason = "disconnected"
        if not n:
            tried = "reconnection is off"
        elif self._last_failure:
            tried = f"did not come back after {n} attempt{'s' * (n != 1)} ({self._last_failure})"
        else:
            tried = (f"it kept dropping right after reconnecting ({n} attempt{'s' * (n != 1)}, none stayed up "
                     f"for {self.stable_s:g} s)")
        raise SourceError(f"{self.spec.name}: stream disconnected after {self.frames} frames; {tried}")

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        """Stop the iteration (safe from another thread). A reader in progress releases the
        capture itself when its current read returns; otherwise it is released here."""
        self._stop.set()
        with self._lock:
            if not self._reading:
                self._release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(source: str | int | Path, **options: Any) -> VideoSource:
    """Open ``source`` now, so a bad path or URL fails here with a clear :class:`SourceError`."""
    return VideoSource(source, **options).open()
