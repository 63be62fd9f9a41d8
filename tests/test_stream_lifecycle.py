"""Where a stream ends and what a monitor does after its end: finite URLs, reconnection budgets,
refused sources, a closed or failed monitor, and results left behind by a consumer that stopped."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from _stream_fixtures import FakeCapture, FileServer, SharpnessBackend, frames, write_video
from glia_edge.stream import QualityMonitor, SourceError, SourceSpec, VideoSource

pytestmark = pytest.mark.timeout(60)


def _clip(n: int) -> list[np.ndarray]:
    """``n`` distinguishable frames: frame i is filled with the value i."""
    return [np.full((8, 8, 3), i, np.uint8) for i in range(n)]


# -- sources ---------------------------------------------------------------------------------

def test_a_video_file_over_http_ends_at_its_last_frame(tmp_path: Path) -> None:
    """It used to be taken for a live stream that dropped: reconnected and replayed forever."""
    write_video(tmp_path / "clip.avi", n=20, start=0, end=0, size=(64, 48))
    server = FileServer(tmp_path)
    try:
        src = VideoSource(server.url("clip.avi"), backoff=(0.01, 0.01), max_frames=100)
        got = list(src)
    finally:
        server.stop()
    assert [f.index for f in got] == list(range(20))
    assert src.end_reason == "end of stream after 20 frames" and src.reconnects == 0
    assert src.finite and src.frame_count == 20
    assert [f.timestamp for f in got] == pytest.approx([i / 30 for i in range(20)])  # media time, like a file


def test_a_finite_url_that_drops_resumes_where_it_was_or_ends() -> None:
    clip = _clip(10)
    caps: list[FakeCapture] = []

    def opener(seekable: bool):  # type: ignore[no-untyped-def]
        def open_(spec: SourceSpec) -> FakeCapture:
            caps.append(FakeCapture(clip, count=10, per_connection=4, seekable=seekable))
            return caps[-1]
        return open_

    src = VideoSource("http://cam/clip.avi", backoff=(0.001, 0.001), opener=opener(True), max_frames=50)
    got = [int(f.image[0, 0, 0]) for f in src]
    assert got == list(range(10)) and src.reconnects == 2  # each reopen continued at the frame reached
    assert src.end_reason == "end of stream after 10 frames"
    # A server that cannot seek: ending beats replaying old frames as new footage.
    src = VideoSource("http://cam/clip.avi", backoff=(0.001, 0.001), opener=opener(False), max_frames=50)
    got = [int(f.image[0, 0, 0]) for f in src]
    assert got == [0, 1, 2, 3] and src.end_reason.startswith("ended early after 4 of 10 frames")


def test_a_source_that_drops_right_after_each_reconnect_runs_out_of_attempts() -> None:
    """A successful reopen used to refill the budget, so --reconnect never ran out."""
    clip = _clip(1) * 1000

    def opener(spec: SourceSpec) -> FakeCapture:  # a live stream (no frame count) that always reopens
        return FakeCapture(clip, per_connection=2)

    src = VideoSource("rtsp://cam/1", reconnect_attempts=3, backoff=(0.001, 0.001), opener=opener, max_frames=200)
    with pytest.raises(SourceError, match=r"rtsp://cam/1: stream disconnected after 8 frames; it kept dropping right "
                                          r"after reconnecting \(3 attempts, none stayed up for 10 s\)"):
        list(src)
    assert src.frames == 8 and src.reconnects == 3
    # A connection that held for stable_s refills it: this one reaches its frame limit.
    src = VideoSource("rtsp://cam/1", reconnect_attempts=3, backoff=(0.001, 0.001), opener=opener, max_frames=20,
                      stable_s=0.0)
    assert len(list(src)) == 20 and src.end_reason == "stopped after 20 frames (max frames)"


def test_a_folder_or_an_empty_source_is_refused_as_such(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    with pytest.raises(SourceError, match=r"imgs: is a folder; watch reads a video file, camera index, URL or "
                                          r"GStreamer pipeline$"):
        VideoSource(tmp_path / "imgs").open()
    for empty in ("", "   "):
        with pytest.raises(SourceError, match=r"^empty source$"):
            VideoSource(empty)


# -- monitor lifecycle -----------------------------------------------------------------------

def test_run_on_a_finished_or_closed_monitor_raises() -> None:
    """A second run() used to yield nothing at all: silent data loss."""
    img = frames(1, 0, 0, size=(64, 48))[0]
    monitor = QualityMonitor(SharpnessBackend(), block=True)
    assert len(list(monitor.run([img] * 3))) == 3
    with pytest.raises(RuntimeError, match=r"QualityMonitor is closed \(run\(\) closes it when its stream ends\): "
                                           r"create a new one per stream"):
        monitor.run([img] * 3)  # raised at the call, before any iteration
    closed = QualityMonitor(SharpnessBackend(), block=True)
    closed.close()
    with pytest.raises(RuntimeError, match="QualityMonitor is closed"):
        list(closed.run([img]))


def test_a_failed_worker_is_named_by_submit_and_run() -> None:
    img = frames(1, 0, 0, size=(64, 48))[0]
    monitor = QualityMonitor(SharpnessBackend(fail=True))
    monitor.submit(img)
    deadline = time.monotonic() + 10
    while monitor.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not monitor.alive and isinstance(monitor.error, RuntimeError)
    failed = "^QualityMonitor stopped: its worker failed: inference device lost$"
    with pytest.raises(RuntimeError, match=failed) as info:
        monitor.submit(img)
    assert info.value.__cause__ is monitor.error
    with pytest.raises(RuntimeError, match="its worker failed: inference device lost"):
        monitor.run([img])


def test_results_a_consumer_left_behind_are_still_polled() -> None:
    """A consumer that stops mid-stream (a signal, an exception) must not take buffered results
    with it: the generator used to hold a whole batch privately, lost to poll()."""
    clip = frames(4, 0, 0, size=(64, 48))
    monitor = QualityMonitor(SharpnessBackend(), block=True, queue_size=4)
    for f in clip:
        monitor.submit(f)
    assert monitor.close(drain=True)
    first = next(monitor.results())
    rest = monitor.poll()
    assert [first.index] + [r.index for r in rest] == [0, 1, 2, 3] == list(range(monitor.stats.scored))
