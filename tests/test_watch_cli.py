"""``glia-edge watch`` on a video whose middle part degrades, with the tiny GLIA checkpoint."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from _stream_fixtures import FileServer, MjpegServer, SharpnessBackend, frames, write_video

# Generous: the session's tiny_checkpoint fixture may be fitted during the first of these tests.
pytestmark = pytest.mark.timeout(600)

N, START, END = 90, 30, 60


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "degrading.avi", n=N, start=START, end=END)


def _watch(*args: str) -> Any:
    from glia_edge.cli import app

    return CliRunner().invoke(app, ["watch", *args])


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_watch_flags_the_degraded_span_and_its_recovery(tiny_checkpoint: Path, video: Path, tmp_path: Path) -> None:
    import glia_edge

    with glia_edge.load(tiny_checkpoint) as model:  # threshold halfway between a clean and the worst frame
        clean, worst = model.predict([f for f in frames(N, START, END)[::45][:2]], bgr=True)
    assert clean - worst > 5, "the tiny checkpoint should score the blurred, noisy frame lower"
    out, plot = tmp_path / "watch.jsonl", tmp_path / "watch.png"
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--no-realtime", "--every-n", "3",
                 "--threshold", f"{(clean + worst) / 2:.3f}", "--hysteresis", f"{(clean - worst) / 10:.3f}",
                 "--jsonl", str(out), "--plot", str(plot))
    assert res.exit_code == 0, res.output
    records = _lines(out)
    scored = [r for r in records if r["event"] == "frame"]
    alerts = [r for r in records if r["event"] == "alert"]
    assert [r["index"] for r in scored] == list(range(0, N, 3))
    assert all(r["state"] == "ok" for r in scored if r["index"] < START)
    assert [a["kind"] for a in alerts] == ["degraded", "recovered"]
    assert START < alerts[0]["index"] <= (START + END) // 2 < alerts[1]["index"] <= END + 15
    assert scored[-1]["state"] == "ok" and all(r["dropped"] == 0 for r in scored)
    summary = records[-1]
    assert summary["event"] == "summary" and summary["frames"] == N and summary["scored"] == N // 3
    assert summary["mode"] == "absolute" and summary["baseline"] is None and alerts[0]["baseline"] is None
    assert summary["threshold"] == pytest.approx((clean + worst) / 2, abs=1e-3) == scored[0]["threshold"]
    assert "ALERT degraded at frame" in res.output and "ALERT recovered at frame" in res.output
    with Image.open(plot) as img:
        assert img.size[0] > 400


def test_watch_defaults_to_baseline_mode(tiny_checkpoint: Path, video: Path, tmp_path: Path) -> None:
    import glia_edge

    with glia_edge.load(tiny_checkpoint) as model:
        clean, worst = model.predict([f for f in frames(N, START, END)[::45][:2]], bgr=True)
        span = model.meta.score_spec.range
    drop = round((clean - worst) / 2 / span, 4)
    out, plot = tmp_path / "auto.jsonl", tmp_path / "auto.png"
    # no --threshold: auto; learn over the first 0.5 s (frames 0-15), degraded half-way to the worst frame
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--no-realtime", "--learn-s", "0.5",
                 "--drop", str(drop), "--hysteresis", f"{(clean - worst) / 10:.3f}", "--jsonl", str(out),
                 "--plot", str(plot))
    assert res.exit_code == 0, res.output
    records = _lines(out)
    scored = [r for r in records if r["event"] == "frame"]
    assert all(r["state"] == "learning" and r["baseline"] is None for r in scored[:15])
    [learned] = [r for r in records if r["event"] == "baseline"]
    assert learned["index"] == 15 and learned["frames"] == 16 and learned["baseline"] == pytest.approx(clean, abs=0.5)
    assert learned["threshold"] == pytest.approx(learned["baseline"] - drop * span, abs=1e-3)
    alerts = [r for r in records if r["event"] == "alert"]
    assert [a["kind"] for a in alerts] == ["degraded", "recovered"]
    assert START < alerts[0]["index"] <= (START + END) // 2 < alerts[1]["index"] <= END + 15
    assert (alerts[0]["baseline"], alerts[0]["threshold"]) == pytest.approx((learned["baseline"], learned["threshold"]),
                                                                          abs=1e-3)
    summary = records[-1]
    assert summary["mode"] == "auto" and summary["baseline"] == learned["baseline"] and summary["final_state"] == "ok"
    assert "baseline mode" in res.output and "ALERT degraded" in res.output and "baseline " in res.output
    assert plot.stat().st_size > 10_000


def test_watch_threshold_is_auto_or_a_number(video: Path) -> None:
    res = _watch(str(video), "--threshold", "high")
    assert res.exit_code == 2 and "give 'auto' or a score" in res.output
    for value in ("nan", "inf"):  # nan never compares below: it would turn every alert off
        res = _watch(str(video), "--threshold", value)
        assert res.exit_code == 2 and "finite score" in res.output
    assert "auto" in _watch("--help").output


def test_sigterm_ends_the_run_like_ctrl_c_with_its_summary_and_plot(tiny_checkpoint: Path, video: Path,
                                                                     tmp_path: Path) -> None:
    """``docker stop`` and systemd send SIGTERM: the run still writes its summary and plot (exit 143)."""
    import os
    import signal
    import threading

    out, plot = tmp_path / "w.jsonl", tmp_path / "w.png"

    def terminate_after_the_first_frame() -> None:  # the handler is in place once frames are written
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if out.is_file() and '"event": "frame"' in out.read_text():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=terminate_after_the_first_frame, daemon=True)
    killer.start()
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--realtime", "--jsonl", str(out), "--plot", str(plot))
    killer.join(5)
    assert res.exit_code == 143, res.output
    summary = _lines(out)[-1]
    assert summary["event"] == "summary" and summary["end"] == "terminated" and summary["frames"] < N
    assert plot.is_file() and signal.getsignal(signal.SIGTERM) == before


def test_sigusr1_relearns_in_baseline_mode() -> None:
    import os
    import signal

    from glia_edge.cli.watch_cmd import _relearn_on_signal

    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 here")

    class Monitor:
        relative, calls = True, 0

        def relearn(self) -> None:
            self.calls += 1

    monitor, before = Monitor(), signal.getsignal(signal.SIGUSR1)
    with _relearn_on_signal(monitor):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes
    assert monitor.calls == 1 and signal.getsignal(signal.SIGUSR1) == before


def test_watch_realtime_keeps_the_pace_by_sampling(tiny_checkpoint: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "rt.jsonl"
    t0 = time.monotonic()
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--max-frames", "45", "--jsonl", str(out))
    assert res.exit_code == 0, res.output
    assert time.monotonic() - t0 >= 44 / 30  # played at the file's 30 fps, like a camera
    records = _lines(out)
    summary = records[-1]
    assert summary["frames"] == 45 and summary["end"].startswith("stopped after 45 frames")
    assert summary["scored"] + summary["dropped"] + summary["skipped"] == 45
    drops = [r["dropped"] for r in records if r["event"] == "frame"]
    assert drops == sorted(drops)


def test_watch_jsonl_to_stdout(tiny_checkpoint: Path, video: Path) -> None:
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--no-realtime", "--max-frames", "4", "--jsonl", "-")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["index"] for r in records if r["event"] == "frame"] == [0, 1, 2, 3]
    assert records[-1]["event"] == "summary"


def test_watch_checks_its_outputs_before_the_stream(tiny_checkpoint: Path, video: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept.jsonl"
    kept.write_text('{"earlier": 1}\n')
    res = _watch(str(tmp_path / "nope.mp4"), "--model", str(tiny_checkpoint), "--jsonl", str(kept))
    assert res.exit_code == 2 and kept.read_text() == '{"earlier": 1}\n'  # a failed start empties nothing
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--jsonl", str(tmp_path))
    assert res.exit_code == 2 and "is a directory" in res.output and "Traceback" not in res.output
    res = _watch(str(video), "--model", str(tiny_checkpoint), "--plot", str(tmp_path / "q.xyz"))
    assert res.exit_code == 2 and "cannot write .xyz" in res.output and "frames," not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jsonl"]


def test_watch_reports_sources_that_cannot_open(tiny_checkpoint: Path, tmp_path: Path) -> None:
    res = _watch(str(tmp_path / "nope.mp4"), "--model", str(tiny_checkpoint))
    assert res.exit_code == 2 and "nope.mp4: video file not found" in res.output
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 4096)
    res = _watch(str(junk), "--model", str(tiny_checkpoint))
    assert res.exit_code == 2 and "junk.avi" in res.output
    res = _watch(str(junk), "--model", str(tmp_path / "missing.onnx"))
    assert res.exit_code == 2 and "missing.onnx" in res.output


def test_watch_source_error_is_one_line_without_opencv_chatter(tmp_path: Path) -> None:
    # FFmpeg ("moov atom not found") and OpenCV ("[ WARN:0@...]") write to the process's stderr
    # themselves, past logging: only a fresh process shows whether the CLI quiets them (-v keeps them).
    import os
    import subprocess
    import sys

    pytest.importorskip("cv2")
    import glia_edge

    model = Path(glia_edge.__file__).parent / "weights" / "glia_vit_nano.synthetic.fp32.onnx"
    (tmp_path / "empty.mp4").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    run = subprocess.run([sys.executable, "-m", "glia_edge", "watch", "empty.mp4", "--model", str(model)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == ["error: empty.mp4: cannot decode it as video (unsupported format or "
                                       "corrupt file)"]


def test_watch_reports_a_stream_that_disconnects(tiny_checkpoint: Path, tmp_path: Path) -> None:
    server = MjpegServer(per_connection=10, connections=1)
    out, plot = tmp_path / "live.jsonl", tmp_path / "live.png"
    res = _watch(server.url, "--model", str(tiny_checkpoint), "--reconnect", "1", "--jsonl", str(out), "--plot",
                 str(plot))
    assert res.exit_code == 1
    assert "stream disconnected after 10 frames; did not come back after 1 attempt" in res.output
    summary = _lines(out)[-1]
    assert summary["frames"] == 10 and "disconnected" in summary["end"] and plot.is_file()


def test_plot_history_stays_bounded() -> None:
    from glia_edge.cli.watch_cmd import History
    from glia_edge.stream import Alert, FrameResult

    history = History(max_points=8)
    for i in range(100):
        alert = Alert("degraded", "ok", i, i / 10, 1.0, 2.0) if i == 57 else None
        history.add(FrameResult(i, i / 10, 50.0, 50.0, "ok", 0, 0, 1.0, alert, baseline=60.0, threshold=42.0))
    assert 4 <= len(history.points) < 8 and history.points[0][0] == 0.0
    assert history.points[-1][0] > 8.0 and history.alerts == [(5.7, "degraded")]
    assert history.points[-1][4:6] == (60.0, 42.0) and math.isnan(history.points[-1][6])


# -- with a fast stand-in model (SharpnessBackend scores 64 on clean frames, ~22 on the worst) ----------

class _Signalling(SharpnessBackend):
    """Sends ``signum`` to this process from the worker during its ``at``-th batch, whose result
    the monitor publishes after the signal: the case that lost scored frames."""

    def __init__(self, signum: int, at: int = 3) -> None:
        super().__init__()
        self.signum, self.at = signum, at

    def _infer(self, batch: Any) -> Any:
        if self.batches + 1 == self.at:
            import os

            os.kill(os.getpid(), self.signum)
        return super()._infer(batch)


def _with_model(monkeypatch: pytest.MonkeyPatch, backend: Any) -> None:
    from glia_edge.cli import watch_cmd

    monkeypatch.setattr(watch_cmd, "_open_model", lambda *args, **kwargs: backend)


def test_watch_ends_a_video_served_over_http(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """It used to reconnect at the clip's end and score it again as new footage, forever."""
    write_video(tmp_path / "clip.avi", n=20, start=0, end=0, size=(64, 48))
    server = FileServer(tmp_path)
    _with_model(monkeypatch, SharpnessBackend())
    out = tmp_path / "u.jsonl"
    try:
        res = _watch(server.url("clip.avi"), "--no-realtime", "--max-frames", "100", "--jsonl", str(out))
    finally:
        server.stop()
    assert res.exit_code == 0, res.output
    records = _lines(out)
    assert [r["index"] for r in records if r["event"] == "frame"] == list(range(20))  # --no-realtime: every frame
    summary = records[-1]
    assert (summary["frames"], summary["scored"], summary["end"]) == (20, 20, "end of stream after 20 frames")
    assert "reconnect" not in res.output


@pytest.mark.parametrize("signame,code,end", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_keeps_every_scored_frame_in_the_jsonl_and_the_plot(
        monkeypatch: pytest.MonkeyPatch, video: Path, tmp_path: Path, signame: str, code: int, end: str) -> None:
    """The summary counted frames scored around the signal that --jsonl and --plot never got."""
    import signal

    from glia_edge.cli import watch_cmd

    plotted: list[int] = []
    monkeypatch.setattr(watch_cmd, "_write_plot", lambda path, history, title: plotted.append(len(history.points)))
    _with_model(monkeypatch, _Signalling(getattr(signal, signame)))
    out = tmp_path / "s.jsonl"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    res = _watch(str(video), "--no-realtime", "--jsonl", str(out), "--plot", str(tmp_path / "s.png"))
    assert res.exit_code == code, res.output
    records = _lines(out)
    summary = records[-1]
    scored = [r for r in records if r["event"] == "frame"]
    assert summary["event"] == "summary" and summary["end"] == end and 3 <= summary["scored"] < N
    assert len(scored) == summary["scored"] == plotted[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_watch_lines_stay_whole_when_output_is_no_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """journald and log files got ALERT, summary and "watching" lines hard-wrapped at 80 columns."""
    clip = write_video(tmp_path / ("a-camera-with-a-rather-long-recording-name-" * 2 + ".avi"), n=N, start=START,
                       end=END)
    _with_model(monkeypatch, SharpnessBackend())
    res = _watch(str(clip), "--no-realtime", "--threshold", "45", "--hysteresis", "5")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    alerts = [line for line in lines if "ALERT" in line]
    assert len(alerts) == 2 and all(line.endswith(("was ok)", "was degraded)")) for line in alerts)
    assert any(line.startswith("watching ") and line.endswith("recovered at 50.0") for line in lines)
    assert any(line.startswith(f"{N} frames, ") and "final state ok; end of file" in line for line in lines)


def test_watch_names_a_folder_or_an_empty_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    _with_model(monkeypatch, SharpnessBackend())
    res = _watch(str(tmp_path / "imgs"))
    assert res.exit_code == 2 and "imgs: is a folder; watch reads a video file, camera index, URL or GStreamer " \
        "pipeline" in res.output.replace("\n", "") and "not found" not in res.output
    res = _watch("")
    assert res.exit_code == 2 and "error: empty source" in res.output


def test_sigusr1_with_an_absolute_threshold_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    import os
    import signal

    from glia_edge.cli.watch_cmd import _relearn_on_signal

    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 here")

    class Monitor:
        relative, calls = False, 0

        def relearn(self) -> None:
            self.calls += 1

    monitor = Monitor()
    with _relearn_on_signal(monitor):  # before, no handler: the default action ended the process
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
    assert monitor.calls == 0 and "SIGUSR1 ignored" in caplog.text


def test_watch_jsonl_on_a_full_disk_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    src = write_video(tmp_path / "v.avi", n=12, start=4, end=8)
    _with_model(monkeypatch, SharpnessBackend())
    res = _watch(str(src), "--no-realtime", "--jsonl", "/dev/full")
    assert res.exit_code == 2, res.output
    assert "error: /dev/full: No space left on device" in res.output, res.output
    assert not isinstance(res.exception, OSError), res.exception  # three chained tracebacks before


def test_watch_plot_title_is_not_mathtext(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = write_video(tmp_path / "cam$_$.avi", n=12, start=4, end=8)
    _with_model(monkeypatch, SharpnessBackend())
    plot = tmp_path / "p.png"
    res = _watch(str(src), "--no-realtime", "--plot", str(plot))
    assert res.exit_code == 0, res.output  # a $...$ pair raised matplotlib's ParseException
    assert plot.stat().st_size > 0


def test_source_names_mask_the_whole_password() -> None:
    from glia_edge.stream.sources import parse_source

    assert parse_source("rtsp://admin:Pa@ssw0rd@10.0.0.2:554/s").name == "rtsp://admin:***@10.0.0.2:554/s"
    assert parse_source("rtsp://:pw@h/x").name == "rtsp://:***@h/x"
    assert parse_source("rtsp://u:pw@h:554/a@b").name == "rtsp://u:***@h:554/a@b"
    assert parse_source("rtsp://host:554/path@x").name == "rtsp://host:554/path@x"  # no user: nothing masked
