"""Stream API: smoothing and hysteresis, frame sources, and the never-blocking QualityMonitor."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from _stream_fixtures import MjpegServer, SharpnessBackend, frames, write_video
from glia_edge.stream import (Ema, QualityMonitor, QualityState, SourceError, State, Thresholds, VideoSource,
                              parse_source)
from glia_edge.stream.sources import APPSINK

pytestmark = pytest.mark.timeout(60)


def _no_monitor_threads(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("glia-") and t.is_alive()]:
            return True
        time.sleep(0.02)
    return False


# -- states ----------------------------------------------------------------------------------

def test_ema() -> None:
    ema = Ema(0.5)
    assert [ema.update(x) for x in (10, 20, 20)] == [10, 15, 17.5]
    assert Ema(0.0).update(3.0) == 3.0
    with pytest.raises(ValueError):
        Ema(1.0)


def test_hysteresis_states_and_alerts() -> None:
    st = QualityState(Thresholds(degrade=40, recover=50, min_frames=2, hold=2), smoothing=0.0)
    scores = [60, 30, 60, 30, 30, 45, 45, 55, 30, 55, 55, 55, 55]
    seen = [st.update(s, i, i / 10) for i, s in enumerate(scores)]
    states = [str(state) for _, state, _ in seen]
    assert states == ["ok", "ok", "ok", "ok", "degraded", "degraded", "degraded", "degraded", "degraded",
                      "degraded", "recovered", "recovered", "ok"]
    alerts = [a for _, _, a in seen if a is not None]
    assert [(a.kind, a.previous, a.index) for a in alerts] == [("degraded", "ok", 4), ("recovered", "degraded", 10)]
    assert alerts[0].to_dict()["event"] == "alert" and alerts[0].timestamp == pytest.approx(0.4)


def test_thresholds() -> None:
    t = Thresholds.for_score_range(0, 100)
    assert (t.degrade, t.recover) == (40, 45)
    assert Thresholds.around(52, 5).recover == 57
    with pytest.raises(ValueError):
        Thresholds(degrade=50, recover=40)


# -- sources ---------------------------------------------------------------------------------

def test_parse_source() -> None:
    assert parse_source(0).kind == parse_source("2").kind == "camera"
    url = parse_source("rtsp://admin:secret@10.0.0.5:554/stream1")
    assert url.kind == "url" and url.live and "secret" not in url.name and "admin" in url.name
    gst = parse_source("rtspsrc location=rtsp://cam/1 ! decodebin ! videoconvert ! appsink")
    assert gst.kind == "gstreamer" and str(gst.target).endswith(APPSINK)
    bare = parse_source("videotestsrc ! videoconvert")
    assert str(bare.target).endswith(f"video/x-raw,format=BGR ! {APPSINK}")
    kept = parse_source("videotestsrc ! appsink drop=false")
    assert str(kept.target).endswith("appsink drop=false")
    assert parse_source("clip.mp4").kind == "file" and not parse_source("clip.mp4").live


def test_a_file_with_an_exclamation_mark_is_a_file(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "wow!.avi", n=3, start=0, end=0, size=(64, 48))
    assert parse_source(str(clip)).kind == "file"
    assert parse_source(str(tmp_path / "missing ! appsink")).kind == "gstreamer"


@pytest.mark.parametrize("option,value", [("crops", 3), ("crops", 0), ("results_buffer", 0)])
def test_monitor_refuses_bad_settings_when_made(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option):
        QualityMonitor(SharpnessBackend(), **{option: value})


def test_file_source_reads_every_frame_with_media_timestamps(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", n=12, start=4, end=8, size=(64, 48), fps=24)
    src = VideoSource(video).open()
    got = list(src)
    assert [f.index for f in got] == list(range(12))
    assert [f.timestamp for f in got] == pytest.approx([i / 24 for i in range(12)])
    assert got[0].image.shape == (48, 64, 3) and got[0].image.dtype == np.uint8
    assert src.end_reason == "end of file after 12 frames"
    assert len(list(VideoSource(video, max_frames=5))) == 5


def test_realtime_file_plays_at_its_frame_rate(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", n=10, start=0, end=0, size=(64, 48), fps=20)
    t0 = time.monotonic()
    assert len(list(VideoSource(video, realtime=True))) == 10
    assert time.monotonic() - t0 >= 9 / 20 - 0.02


def test_sources_that_cannot_open_say_why(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="video file not found"):
        VideoSource(tmp_path / "missing.mp4").open()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF0000AVI not really a video" * 10)
    with pytest.raises(SourceError, match="junk.avi"):
        list(VideoSource(junk))
    with pytest.raises(SourceError, match="cannot connect"):
        VideoSource("http://127.0.0.1:9/stream.mjpg", open_timeout_s=2).open()


def test_gstreamer_needs_an_opencv_built_with_it() -> None:
    import cv2

    from glia_edge.stream.sources import _has_gstreamer

    if _has_gstreamer(cv2):
        pytest.skip("this OpenCV has GStreamer; the refusal path is for builds without it")
    with pytest.raises(SourceError, match="no GStreamer support"):
        VideoSource("videotestsrc num-buffers=3 ! videoconvert").open()


def test_live_stream_reconnects_then_reports_the_disconnect() -> None:
    server = MjpegServer(per_connection=8, connections=2)  # hangs up twice, then goes away
    src = VideoSource(server.url, reconnect_attempts=2, backoff=(0.05, 0.1), open_timeout_s=3, read_timeout_s=3)
    got: list[int] = []
    with pytest.raises(SourceError, match="disconnected after 16 frames; did not come back after 2 attempts"):
        for frame in src:
            got.append(frame.index)
    assert got == list(range(16)) and src.reconnects == 1


# -- QualityMonitor --------------------------------------------------------------------------

def test_monitor_scores_in_order_and_flags_the_degraded_span() -> None:
    clip = frames(40, 10, 30, size=(64, 48), noise=0.0)
    monitor = QualityMonitor(SharpnessBackend(), smoothing=0.3, block=True,
                             thresholds=Thresholds(degrade=30, recover=50, min_frames=2, hold=3))
    alerts: list[object] = []
    monitor.on_alert = alerts.append
    results = list(monitor.run((f, i / 30) for i, f in enumerate(clip)))
    assert [r.index for r in results] == list(range(40))
    assert all(r.state == "ok" for r in results[:10]) and results[-1].state == "ok"
    kinds = [(a.kind, a.index) for a in alerts]  # type: ignore[attr-defined]
    assert [k for k, _ in kinds] == ["degraded", "recovered"]
    assert 10 <= kinds[0][1] < 20 <= kinds[1][1] < 34
    assert results[kinds[0][1]].alert is not None
    assert monitor.stats.scored == 40 and monitor.stats.dropped == 0 and _no_monitor_threads()


def test_monitor_never_blocks_the_producer_and_counts_drops() -> None:
    clip = frames(6, 0, 0, size=(64, 48))
    monitor = QualityMonitor(SharpnessBackend(delay=0.05), queue_size=1)
    waits = []
    for i in range(60):
        t0 = time.perf_counter()
        monitor.submit(clip[i % 6], timestamp=i / 30)
        waits.append(time.perf_counter() - t0)
    assert monitor.close(drain=True, timeout=10)
    results = monitor.poll()
    stats = monitor.stats
    assert max(waits) < 0.03  # a 50 ms model never held the producer up
    assert stats.seen == 60 and stats.dropped > 30
    assert stats.scored + stats.dropped + stats.skipped == 60  # every frame accounted for
    assert len(results) == stats.scored and results[-1].index == 59  # the newest frame is the one kept
    assert results[-1].dropped == stats.dropped


def test_sampling_every_n_and_max_fps() -> None:
    clip = frames(1, 0, 0, size=(64, 48))[0]
    assert [r.index for r in QualityMonitor(SharpnessBackend(), every_n=4, block=True).run([clip] * 10)] == [0, 4, 8]
    by_rate = QualityMonitor(SharpnessBackend(), max_fps=10, block=True).run((clip, i / 30) for i in range(12))
    assert [r.index for r in by_rate] == [0, 3, 6, 9]


def test_batched_queue_matches_single_frame_scores() -> None:
    clip = frames(8, 2, 6, size=(64, 48), noise=0.0)
    model = SharpnessBackend()
    monitor = QualityMonitor(model, queue_size=8, crops=5, block=True)
    for f in clip:
        monitor.submit(f)
    monitor.close()
    scores = [r.score for r in monitor.results(timeout=1)]
    assert scores == pytest.approx([float(model.predict(f, crops=5, bgr=True)[0]) for f in clip])


def test_bad_frames_and_callback_errors_do_not_stop_the_monitor() -> None:
    good = frames(1, 0, 0, size=(64, 48))[0]

    def broken_callback(result: object) -> None:
        raise ValueError("callback bug")

    monitor = QualityMonitor(SharpnessBackend(), block=True, on_result=broken_callback)
    results = list(monitor.run([good, np.zeros((4, 4, 7), np.uint8), good]))
    assert [r.error is None for r in results] == [True, False, True]
    assert "shape" in (results[1].error or "") and results[1].score is None
    assert monitor.stats.errors == 1 and monitor.stats.scored == 2


def test_failing_backend_is_raised_and_threads_end() -> None:
    monitor = QualityMonitor(SharpnessBackend(fail=True), block=True)
    with pytest.raises(RuntimeError, match="inference device lost"):
        list(monitor.run(frames(3, 0, 0, size=(64, 48))))
    assert not monitor.alive and _no_monitor_threads()


def test_source_error_mid_stream_is_raised_after_the_scored_frames() -> None:
    clip = frames(1, 0, 0, size=(64, 48))[0]

    def dropping() -> Iterator[np.ndarray]:
        yield from [clip] * 5
        raise SourceError("camera 0: stream disconnected after 5 frames")

    got = []
    with pytest.raises(SourceError, match="disconnected after 5 frames"):
        for res in QualityMonitor(SharpnessBackend(), block=True).run(dropping()):
            got.append(res.index)
    assert got == [0, 1, 2, 3, 4] and _no_monitor_threads()


def test_consumer_stopping_early_stops_an_endless_source(tmp_path: Path) -> None:
    clip = frames(1, 0, 0, size=(64, 48))[0]

    def endless() -> Iterator[np.ndarray]:
        while True:
            time.sleep(0.005)
            yield clip

    monitor = QualityMonitor(SharpnessBackend(delay=0.01))
    for i, _ in enumerate(monitor.run(endless())):
        if i == 5:
            break
    assert _no_monitor_threads() and not monitor.alive
    with pytest.raises(RuntimeError, match="closed"):
        monitor.submit(clip)


def test_monitor_over_a_video_source_stops_cleanly(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", n=30, start=10, end=20, size=(64, 48))
    monitor = QualityMonitor(SharpnessBackend(), every_n=2, block=True)
    results = list(monitor.run(VideoSource(video)))
    assert [r.index for r in results] == list(range(0, 30, 2))
    assert results[3].timestamp == pytest.approx(6 / 30)
    assert _no_monitor_threads()


# -- several streams, one model ------------------------------------------------------------------

def test_four_streams_share_one_openvino_model() -> None:
    """Four monitors (four cameras) on one loaded OpenVINO model, all at once: no errors, and each
    stream's results equal to that stream scored alone."""
    import glia_edge

    pytest.importorskip("openvino")
    clips = [frames(12, 3 + k, 9 + k, size=(256, 224), seed=k) for k in range(4)]

    def run(model: object, clip: list[np.ndarray]) -> list[tuple[int, float | None, str, str | None]]:
        monitor = QualityMonitor(model, smoothing=0.3, block=True)
        out = [(r.index, r.score, r.state, r.error) for r in monitor.run((f, i / 10) for i, f in enumerate(clip))]
        assert monitor.error is None and monitor.stats.errors == 0
        return out

    with glia_edge.load(runtime="openvino") as model:  # the packaged default model on OpenVINO
        alone = [run(model, clip) for clip in clips]
        shared: list[list[tuple[int, float | None, str, str | None]]] = [[] for _ in clips]
        failures: list[BaseException] = []

        def stream(k: int) -> None:
            try:
                shared[k] = run(model, clips[k])
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=stream, args=(k,)) for k in range(len(clips))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert model.requests_created >= 2  # the streams really ran at once, each on its own request
    tol = 1e-6 * model.meta.score_spec.range
    for k, (one, together) in enumerate(zip(alone, shared, strict=True)):
        assert [r[0] for r in together] == list(range(12)) and all(r[3] is None for r in together), k
        assert [r[2] for r in together] == [r[2] for r in one], k
        np.testing.assert_allclose([r[1] for r in together], [r[1] for r in one], rtol=0, atol=tol)


def test_a_failed_read_is_that_frames_error_not_the_end_of_the_stream() -> None:
    """``cv2.VideoCapture.read()`` gives None for a frame it could not read: as ``submit(None)``, one error."""
    good = frames(1, 0, 0, size=(64, 48))[0]
    monitor = QualityMonitor(SharpnessBackend(), block=True)
    results = list(monitor.run([good, None, (None, 5.0), good]))
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "NoneType" in (results[1].error or "") and monitor.stats.errors == 2
