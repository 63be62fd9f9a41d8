"""``glia-edge watch SOURCE``: score a video file, camera, URL or GStreamer pipeline live.

A one-line status updates as frames are scored; alerts are printed as they happen; ``--jsonl``
writes one JSON line per scored frame (``event: frame``) and per alert (``event: alert``) plus a
closing ``event: summary``; ``--plot`` draws score over time when the source ends or on Ctrl-C.
"""
from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Optional

import typer

from glia_edge.atomic import atomic_write
from glia_edge.cli.common import cli_errors


def _open_model(model: Optional[Path], crops: int, queue_size: int, threads: Optional[int],
                precision: Optional[str] = None) -> Any:
    import glia_edge
    from glia_edge.formats import format_of
    from glia_edge.runtimes.base import pick_default

    options: dict[str, Any] = {"batch_size": max(8, crops * queue_size)}
    if threads:
        options["threads"] = threads
    if precision:
        options["precision"] = precision
    runtime = None
    if model is None:  # the packaged default model, on the first runtime installed here
        model, cls = pick_default(**options)
        runtime = cls.format
    if (runtime or format_of(model).name) == "openvino" and crops * queue_size > 1:
        options["mode"] = "throughput"  # batches of several crops or frames go over OpenVINO's async infer requests
    return glia_edge.load(model, runtime=runtime, **options)


def _thresholds(model: Any, threshold: Optional[float], hysteresis: Optional[float], min_frames: int,
                hold: int) -> Any:
    from glia_edge.stream import Thresholds

    spec = model.meta.score_spec
    if threshold is None:
        return Thresholds.for_score_range(spec.min, spec.max, min_frames=min_frames, hold=hold)
    margin = 0.05 * spec.range if hysteresis is None else hysteresis
    return Thresholds.around(threshold, margin, min_frames=min_frames, hold=hold)


def _status(res: Any, stats: Any, ran: str = "") -> str:
    score = "-" if res.score is None else f"{res.score:6.1f}"
    smoothed = "-" if res.smoothed is None else f"{res.smoothed:6.1f}"
    colour = {"ok": "green", "degraded": "bold red", "recovered": "yellow"}[res.state]
    return (f"frame {res.index:>7d}  t {res.timestamp:10.2f}  score {score}  smoothed {smoothed}  "
            f"[{colour}]{res.state:9s}[/]  {stats.scored_fps:5.1f} scored/s  dropped {res.dropped}  "
            f"skipped {res.skipped}" + (f"  | {ran}" if ran else ""))


def _alert_line(alert: Any) -> str:
    colour = "bold red" if alert.kind == "degraded" else "bold yellow"
    return (f"[{colour}]ALERT {alert.kind}[/] at frame {alert.index} (t={alert.timestamp:.2f}): "
            f"score {alert.score:.1f}, smoothed {alert.smoothed:.1f} (was {alert.previous})")


class History:
    """What the plot needs, in bounded memory: when full, every other point is dropped (alerts are kept)."""

    def __init__(self, max_points: int = 100_000) -> None:
        self.max_points = max_points
        self.points: list[tuple[float, float, float, bool]] = []  # t, score, smoothed, degraded
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
        self.points.append((res.timestamp, res.score, res.smoothed, res.state == "degraded"))
        if len(self.points) >= self.max_points:
            self.points, self._stride = self.points[::2], self._stride * 2


def _write_plot(path: Path, history: History, thresholds: Any, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = history.points
    t0 = pts[0][0] if pts else 0.0
    t = [p[0] - t0 for p in pts]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, [p[1] for p in pts], ".", ms=3, alpha=0.5, label="score")
    ax.plot(t, [p[2] for p in pts], "-", lw=1.5, label="smoothed")
    ax.axhline(thresholds.degrade, color="red", ls="--", lw=1, label="degrade below")
    ax.axhline(thresholds.recover, color="green", ls=":", lw=1, label="recover at")
    for ts, kind in history.alerts:
        ax.axvline(ts - t0, color="red" if kind == "degraded" else "green", alpha=0.6)
    degraded = [p[3] for p in pts]
    if any(degraded):
        ax.fill_between(t, 0, 1, where=degraded, step="post", color="red", alpha=0.1,
                        transform=ax.get_xaxis_transform(), label="degraded")
    ax.set(xlabel="time since first scored frame (s)", ylabel="quality score", title=title)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    try:
        # The temporary file has no image suffix, so name the format explicitly.
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)


def _emit(sink: Optional[IO[str]], record: dict[str, Any]) -> None:
    if sink is not None:
        sink.write(json.dumps(record) + "\n")
        sink.flush()


def _consume(monitor: Any, source: Any, sink: Optional[IO[str]], console: Any, history: History) -> str | None:
    """Run the monitor over the source, filling ``history``; returns the error that ended it, if any."""
    from rich.live import Live

    from glia_edge.stream import SourceError

    error = None
    with Live("waiting for frames...", console=console, refresh_per_second=4, transient=True) as live:
        try:
            for res in monitor.run(source):
                history.add(res)
                _emit(sink, {"event": "frame", **res.to_dict()})
                if res.alert is not None:
                    _emit(sink, res.alert.to_dict())
                    live.console.print(_alert_line(res.alert))
                live.update(_status(res, monitor.stats, monitor.model.describe()))
        except SourceError as exc:
            error = str(exc)
        except KeyboardInterrupt:
            monitor.close(drain=False)
            error = "interrupted"
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
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Degraded below this smoothed score "
                                              "(default: 40% of the model's score range)."),
    hysteresis: Optional[float] = typer.Option(None, "--hysteresis", min=0, help="Recover at threshold + this "
                                               "(default: 5% of the score range)."),
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
    reconnect: int = typer.Option(5, "--reconnect", min=0, help="Reconnection attempts for a dropped live stream."),
) -> None:
    """Score a live stream or video, smooth the score and alert when quality degrades and recovers."""
    from rich.console import Console

    from glia_edge.stream import QualityMonitor, VideoSource

    if crops not in (1, 5, 9):
        raise typer.BadParameter("must be 1, 5 or 9", param_hint="--crops")
    console = Console(stderr=jsonl == "-", highlight=False)
    history = History()
    with ExitStack() as stack:
        with cli_errors():
            sink = None if jsonl is None else sys.stdout if jsonl == "-" else stack.enter_context(open(jsonl, "w"))
            backend = stack.enter_context(_open_model(model, crops, queue_size, threads, precision))
            limits = _thresholds(backend, threshold, hysteresis, min_frames, hold)
            video = VideoSource(source, realtime=realtime, reconnect_attempts=reconnect, max_frames=max_frames).open()
            stack.callback(video.close)
        monitor = QualityMonitor(backend, every_n=every_n, max_fps=max_fps, crops=crops, smoothing=smoothing,
                                 thresholds=limits, queue_size=queue_size, bgr=True,
                                 block=not video.spec.live and not realtime)
        console.print(f"watching {video.spec.name} ({video.spec.kind}, {video.fps or '?'} fps) with "
                      f"{backend.describe()}; "
                      f"degraded below {limits.degrade:.1f}, recovered at {limits.recover:.1f}")
        error = _consume(monitor, video, sink, console, history)
        summary = _summary(monitor, video.spec.name, error or video.end_reason)
        _emit(sink, summary)
    if plot is not None:
        _write_plot(plot, history, limits, video.spec.name)
    console.print(f"{summary['frames']} frames, {summary['scored']} scored ({summary['scored_fps']:.1f}/s over "
                  f"{summary['elapsed_s']:.1f} s), {summary['skipped']} skipped by sampling, {summary['dropped']} "
                  f"dropped, {summary['alerts']} alerts; final state {summary['final_state']}; {summary['end']}")
    if error is not None:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(130 if error == "interrupted" else 1)


def _summary(monitor: Any, source: str, end: str) -> dict[str, Any]:
    stats = monitor.stats
    return {"event": "summary", "source": source, "frames": stats.seen, "scored": stats.scored,
            "skipped": stats.skipped, "dropped": stats.dropped, "errors": stats.errors, "alerts": stats.alerts,
            "elapsed_s": round(stats.elapsed_s, 3), "scored_fps": round(stats.scored_fps, 2),
            "final_state": monitor.state, "end": end}


def register(app: typer.Typer) -> None:
    app.command()(watch)
