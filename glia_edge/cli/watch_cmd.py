"""``glia-edge watch SOURCE``: score a video file, camera, URL or GStreamer pipeline live.

A one-line status updates as frames are scored; alerts are printed as they happen; ``--jsonl``
writes one JSON line per scored frame (``event: frame``), per alert (``event: alert``) and per
learned baseline (``event: baseline``) plus a closing ``event: summary``; ``--plot`` draws score,
baseline and thresholds over time when the source ends, on Ctrl-C or on SIGTERM. A signal stops
the source and the monitor, and the frames already scored still reach the JSON lines and the plot,
so the summary's count matches them.

``--threshold auto`` (the default) learns the stream's own normal level first and alerts on a drop
below it (:class:`~glia_edge.stream.RelativeThresholds`); SIGUSR1 re-learns it. A number is an
absolute threshold.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import typer

from glia_edge.atomic import atomic_write, check_writable
from glia_edge.cli.common import SIGNAL_EXIT_CODES, Terminated, cli_errors, fail, interruption

log = logging.getLogger(__name__)


def _open_model(model: Optional[Path], crops: int, queue_size: int, threads: Optional[int],
                precision: Optional[str] = None) -> Any:
    from glia_edge.runtimes.base import load_batched

    options: dict[str, Any] = {"batch_size": max(8, crops * queue_size)}
    if threads:
        options["threads"] = threads
    if precision:
        options["precision"] = precision
    return load_batched(model, batched=crops * queue_size > 1, **options)


def parse_threshold(text: str) -> Optional[float]:
    """``auto`` -> None (baseline mode); a number -> that absolute threshold."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give 'auto' or a score", param_hint="--threshold") from None
    if not math.isfinite(value):  # nan would never compare below and turn every alert off
        raise typer.BadParameter(f"{text!r}: give 'auto' or a finite score", param_hint="--threshold")
    return value


def _plot_format(path: Path) -> str:
    """The image format of a --plot path: its suffix, PNG without one."""
    return path.suffix.lstrip(".").lower() or "png"


def _check_plot_path(plot: Path) -> None:
    """Refuse a --plot path before the stream starts, not after it ends (maybe hours later)."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = _plot_format(plot)
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise typer.BadParameter(f"{plot}: matplotlib cannot write .{fmt} (use .png, .svg or .pdf)", param_hint="--plot")
    check_writable(plot)


def _thresholds(model: Any, threshold: Optional[float], hysteresis: Optional[float], min_frames: int,
                hold: int, drop: float = 0.2, learn_s: float = 3.0, adapt_s: float = 0.0) -> Any:
    from glia_edge.stream import RelativeThresholds, Thresholds

    spec = model.meta.score_spec
    margin = 0.05 * spec.range if hysteresis is None else hysteresis
    if threshold is None:
        if margin > drop * spec.range:
            raise typer.BadParameter(f"must not exceed --drop ({drop * spec.range:.3g} score points)",
                                     param_hint="--hysteresis")
        return RelativeThresholds(drop=drop * spec.range, hysteresis=margin, learn_s=learn_s, adapt_s=adapt_s,
                                  min_frames=min_frames, hold=hold)
    return Thresholds.around(threshold, margin, min_frames=min_frames, hold=hold)


def _describe_rule(limits: Any) -> str:
    from glia_edge.stream import RelativeThresholds

    if isinstance(limits, RelativeThresholds):
        adapt = f", following slow changes (time constant {limits.adapt_s:g} s)" if limits.adapt_s else ""
        return (f"baseline mode: learning this stream's normal level over its first {limits.learn_s:g} s, then "
                f"degraded below baseline - {limits.drop:.1f}, recovered at baseline - "
                f"{limits.drop - limits.hysteresis:.1f}{adapt}")
    return f"degraded below {limits.degrade:.1f}, recovered at {limits.recover:.1f}"


def _num(x: Optional[float], fmt: str = "6.1f") -> str:
    return "-" if x is None else format(x, fmt)


def _status(res: Any, stats: Any, ran: str = "") -> str:
    from rich.markup import escape

    colour = {"learning": "cyan", "ok": "green", "degraded": "bold red", "recovered": "yellow"}[res.state]
    limit = "" if res.threshold is None else f"  below {res.threshold:6.1f}"
    return (f"frame {res.index:>7d}  t {res.timestamp:10.2f}  score {_num(res.score)}  smoothed {_num(res.smoothed)}  "
            f"[{colour}]{res.state:9s}[/]" + ("" if res.baseline is None else f"  baseline {res.baseline:6.1f}")
            + f"{limit}  {stats.scored_fps:5.1f} scored/s  dropped {res.dropped}  skipped {res.skipped}"
            + (f"  | {escape(ran)}" if ran else ""))


def _alert_line(alert: Any) -> str:
    colour = "bold red" if alert.kind == "degraded" else "bold yellow"
    base = "" if alert.baseline is None else f", baseline {alert.baseline:.1f}"
    limit = f"below {alert.threshold:.1f}" if alert.kind == "degraded" else f"at {alert.recover:.1f}"
    return (f"[{colour}]ALERT {alert.kind}[/] at frame {alert.index} (t={alert.timestamp:.2f}): "
            f"score {alert.score:.1f}, smoothed {alert.smoothed:.1f} ({alert.kind} {limit}{base}; "
            f"was {alert.previous})")


def _baseline_event(res: Any, frames: int) -> dict[str, Any]:
    return {"event": "baseline", "index": res.index, "timestamp": round(res.timestamp, 6),
            "baseline": round(res.baseline, 4), "threshold": round(res.threshold, 4),
            "recover": round(res.recover, 4), "frames": frames}


class History:
    """What the plot needs, in bounded memory: when full, every other point is dropped (alerts are kept)."""

    def __init__(self, max_points: int = 100_000) -> None:
        self.max_points = max_points
        # t, score, smoothed, degraded, baseline, threshold (degraded below), recover (nan where none)
        self.points: list[tuple[float, float, float, bool, float, float, float]] = []
        self.alerts: list[tuple[float, str]] = []
        self._stride, self._n = 1, 0

    def add(self, res: Any) -> None:
        if res.alert is not None:
            self.alerts.append((res.timestamp, res.alert.kind))
        if res.score is None:
            return
        self._n += 1
        if self._n % self._stride:
            return
        lines = [float("nan") if v is None else v for v in (res.baseline, res.threshold, res.recover)]
        self.points.append((res.timestamp, res.score, res.smoothed, res.state == "degraded", *lines))
        if len(self.points) >= self.max_points:
            self.points, self._stride = self.points[::2], self._stride * 2


def _write_plot(path: Path, history: History, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = history.points
    t0 = pts[0][0] if pts else 0.0
    t = [p[0] - t0 for p in pts]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, [p[1] for p in pts], ".", ms=3, alpha=0.5, label="score")
    ax.plot(t, [p[2] for p in pts], "-", lw=1.5, label="smoothed")
    if any(p[4] == p[4] for p in pts):  # some baseline (not nan)
        ax.plot(t, [p[4] for p in pts], "-", color="grey", lw=1, drawstyle="steps-post", label="baseline")
    ax.plot(t, [p[5] for p in pts], "--", color="red", lw=1, drawstyle="steps-post", label="degrade below")
    ax.plot(t, [p[6] for p in pts], ":", color="green", lw=1, drawstyle="steps-post", label="recover at")
    for ts, kind in history.alerts:
        ax.axvline(ts - t0, color="red" if kind == "degraded" else "green", alpha=0.6)
    degraded = [p[3] for p in pts]
    if any(degraded):
        ax.fill_between(t, 0, 1, where=degraded, step="post", color="red", alpha=0.1,
                        transform=ax.get_xaxis_transform(), label="degraded")
    ax.set(xlabel="time since first scored frame (s)", ylabel="quality score")
    ax.set_title(title, parse_math=False)  # "cam$_$.avi" raised a mathtext ParseException
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    try:
        # The temporary file has no image suffix, so name the format explicitly.
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=_plot_format(path)))
    finally:
        plt.close(fig)


def _open_jsonl(path: Path) -> IO[str]:
    """The --jsonl file, truncated, its folder made (a stream log, appended to line by line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")


def _emit(sink: Optional[IO[str]], record: dict[str, Any]) -> None:
    if sink is None:
        return
    try:
        sink.write(json.dumps(record) + "\n")
        sink.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:  # a full disk: one line naming the log, not a flush error again at close
        if sink is not sys.stdout:
            with suppress(OSError):
                sink.close()
        raise OSError(exc.errno, exc.strerror, getattr(sink, "name", "--jsonl")) from None


def _consume(monitor: Any, source: Any, sink: Optional[IO[str]], console: Any, history: History,
             stop: Optional["_StopSignals"] = None) -> str | None:
    """Run the monitor over the source, filling ``history``; returns the error that ended it, if any
    (``interrupted`` / ``terminated`` when ``stop`` caught a signal)."""
    from rich.live import Live

    from glia_edge.stream import SourceError

    error = None
    with Live("waiting for frames...", console=console, refresh_per_second=4, transient=True) as live:

        def handle(res: Any) -> None:
            history.add(res)
            _emit(sink, {"event": "frame", **res.to_dict()})
            if res.learned:
                event = _baseline_event(res, monitor.baseline_frames)
                _emit(sink, event)
                live.console.print(f"baseline {event['baseline']:.1f} learned from {event['frames']} frames "
                                   f"(frame {res.index}, t={res.timestamp:.2f}): degraded below "
                                   f"{event['threshold']:.1f}, recovered at {event['recover']:.1f}")
            if res.alert is not None:
                _emit(sink, res.alert.to_dict())
                live.console.print(_alert_line(res.alert))
            live.update(_status(res, monitor.stats, monitor.model.describe()))

        try:
            # A first SIGINT/SIGTERM only closes the monitor (see _StopSignals): this loop then ends
            # by itself after the results already scored, so none is counted without being written.
            for res in monitor.run(source):
                handle(res)
        except SourceError as exc:
            error = str(exc)
        except KeyboardInterrupt as exc:  # a second signal, or one caught off the main thread
            monitor.close(drain=False)
            for res in monitor.poll():  # scored and counted: write them before the summary
                handle(res)
            error = interruption(exc)
    if stop is not None and stop.reason:
        return stop.reason
    return error


def watch(
    source: str = typer.Argument(..., help="Video file, camera index (0), rtsp:// or http:// URL, or a GStreamer "
                                 "pipeline (anything with '!')."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Artifact: .safetensors, .onnx, OpenVINO .xml "
                                         "or TensorRT .engine (default: the packaged model)."),
    every_n: int = typer.Option(1, "--every-n", min=1, help="Score every Nth frame."),
    max_fps: Optional[float] = typer.Option(None, "--max-fps", min=0.01, help="Score at most F frames per second "
                                            "(of stream time)."),
    crops: int = typer.Option(1, "--crops", help="Crops per frame: 1, 5 or 9."),
    threshold: str = typer.Option("auto", "--threshold", "-t", help="'auto': learn this stream's normal level "
                                  "(baseline) over its first --learn-s seconds, then alert when the smoothed score "
                                  "falls --drop below it. A number: degraded below this smoothed score (absolute)."),
    drop: float = typer.Option(0.2, "--drop", min=0.001, max=1.0, help="Auto: degraded below baseline - DROP x the "
                               "model's score range (0.2 = 18 points on a 10-100 model)."),
    learn_s: float = typer.Option(3.0, "--learn-s", min=0.0, help="Auto: seconds of scored frames (stream time) whose "
                                  "median smoothed score is the baseline. Send SIGUSR1 to learn it again."),
    adapt_s: float = typer.Option(0.0, "--adapt-s", min=0.0, help="Auto: let the baseline follow slow changes "
                                  "while the state is ok, with this time constant in seconds (0 = fixed)."),
    hysteresis: Optional[float] = typer.Option(None, "--hysteresis", min=0, help="Recover at the degrade threshold "
                                               "+ this, in score points (default: 5% of the score range)."),
    smoothing: float = typer.Option(0.5, "--smoothing", min=0.0, max=0.99, help="EMA weight of the past, per "
                                    "scored frame (0 = off)."),
    min_frames: int = typer.Option(2, "--min-frames", min=1, help="Scored frames past a threshold before the "
                                   "state changes."),
    hold: int = typer.Option(5, "--hold", min=0, help="Good scored frames after 'recovered' before 'ok'."),
    jsonl: Optional[str] = typer.Option(None, "--jsonl", help="Write JSON lines here ('-' for stdout)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save a plot of score over time here at the end."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
    realtime: bool = typer.Option(True, "--realtime/--no-realtime", help="Play a file at its frame rate, like a "
                                  "camera (frames the model cannot keep up with are dropped); --no-realtime "
                                  "scores every sampled frame as fast as possible."),
    queue_size: int = typer.Option(1, "--queue-size", min=1, help="Newest frames kept waiting for the model."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Without --model: the packaged artifact of "
                                            "this precision (fp32 by default, int8); with --model: checked."),
    reconnect: int = typer.Option(5, "--reconnect", min=0, help="Reconnection attempts for a dropped live stream, "
                                  "spent across drops until a connection stays up 10 s."),
) -> None:
    """Score a live stream or video, smooth the score and alert when quality degrades and recovers."""
    from rich.console import Console
    from rich.markup import escape

    from glia_edge.errors import printable
    from glia_edge.preprocess import CROP_COUNTS
    from glia_edge.stream import QualityMonitor, VideoSource

    if crops not in CROP_COUNTS:
        raise typer.BadParameter("must be 1, 5 or 9", param_hint="--crops")
    absolute = parse_threshold(threshold)
    # soft_wrap: when stdout is no terminal (journald, a log file) one record stays one line
    # instead of being hard-wrapped at 80 columns.
    console = Console(stderr=jsonl == "-", highlight=False, soft_wrap=True)
    history = History()
    with cli_errors(), ExitStack() as stack:  # outer cli_errors: a --jsonl write failing mid-run
        with cli_errors():
            if plot is not None:
                _check_plot_path(plot)
            if jsonl not in (None, "-"):
                check_writable(Path(jsonl))
            try:
                backend = stack.enter_context(_open_model(model, crops, queue_size, threads, precision))
            except (ValueError, TypeError) as exc:  # an option the backend refuses, as score reports it
                fail(str(exc))
            limits = _thresholds(backend, absolute, hysteresis, min_frames, hold, drop, learn_s, adapt_s)
            video = VideoSource(source, realtime=realtime, reconnect_attempts=reconnect, max_frames=max_frames).open()
            stack.callback(video.close)
            # Opened (and an earlier file emptied) only once the model and the source are known to work.
            sink = None if jsonl is None else sys.stdout if jsonl == "-" else stack.enter_context(_open_jsonl(Path(jsonl)))
        monitor = QualityMonitor(backend, every_n=every_n, max_fps=max_fps, crops=crops, smoothing=smoothing,
                                 thresholds=limits, queue_size=queue_size, bgr=True,
                                 block=video.finite and not realtime)
        console.print(f"watching {escape(printable(video.spec.name))} ({video.spec.kind}, {video.fps or '?'} fps) with "
                      f"{escape(backend.describe())}; {_describe_rule(limits)}")
        stack.enter_context(_relearn_on_signal(monitor))
        stop = stack.enter_context(_StopSignals(monitor))
        error = _consume(monitor, video, sink, console, history, stop)
        summary = _summary(monitor, video.spec.name, error or video.end_reason)
        _emit(sink, summary)
    if plot is not None:
        _write_plot(plot, history, video.spec.name)
    console.print(f"{summary['frames']} frames, {summary['scored']} scored ({summary['scored_fps']:.1f}/s over "
                  f"{summary['elapsed_s']:.1f} s), {summary['skipped']} skipped by sampling, {summary['dropped']} "
                  f"dropped, {summary['alerts']} alerts; final state {summary['final_state']}; "
                  f"{escape(printable(str(summary['end'])))}")
    if error is not None:
        fail(error, SIGNAL_EXIT_CODES.get(error, 1))


class _StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (a service manager's stop) end the run with its summary line,
    --jsonl summary and plot. The first signal only closes the monitor, which stops the source and
    lets the result loop finish what was already scored: an exception raised wherever the main
    thread happened to be would lose results the monitor had counted. A second signal raises
    (:class:`Terminated` or ``KeyboardInterrupt``), for a run that does not stop."""

    SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.reason = self.SIGNALS[signum]
        log.debug("%s: stopping after the frames already scored", self.reason)
        self.monitor.close(drain=False, timeout=0)  # never waits: this runs inside the main thread

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


@contextmanager
def _relearn_on_signal(monitor: Any) -> Iterator[None]:
    """In baseline mode, SIGUSR1 (``kill -USR1 PID``) makes the monitor learn its baseline again; with
    an absolute threshold it is logged and ignored."""
    if not (hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread()):
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        if not monitor.relative:  # SIGUSR1's default action would end the run without its summary
            log.warning("SIGUSR1 ignored: the threshold is absolute (--threshold), no baseline to re-learn")
            return
        log.info("SIGUSR1: re-learning the baseline")
        monitor.relearn()

    previous = signal.signal(signal.SIGUSR1, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _summary(monitor: Any, source: str, end: str) -> dict[str, Any]:
    stats = monitor.stats
    limits = monitor.active_thresholds
    return {"event": "summary", "source": source, "frames": stats.seen, "scored": stats.scored,
            "skipped": stats.skipped, "dropped": stats.dropped, "errors": stats.errors, "alerts": stats.alerts,
            "elapsed_s": round(stats.elapsed_s, 3), "scored_fps": round(stats.scored_fps, 2),
            "final_state": monitor.state, "mode": "auto" if monitor.relative else "absolute",
            "baseline": None if monitor.baseline is None else round(monitor.baseline, 4),
            "threshold": None if limits is None else round(limits.degrade, 4),
            "recover": None if limits is None else round(limits.recover, 4), "end": end}


def register(app: typer.Typer) -> None:
    app.command()(watch)
