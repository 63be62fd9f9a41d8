"""Soak test of the stream monitor: does scoring keep pace with a camera, and does memory stay flat?

::

    python -m glia_edge.benchmarks.stream_soak --model ART --frames 10000 [--fps 30] [--every-n 1]
        [--max-fps F] [--crops 1] [--queue-size 1] [--threads T] [--video PATH] [--size 640x480]
        [--no-realtime] [--out soak.json] [--plot soak.png]

A producer thread plays frames at ``--fps`` like a camera (each frame a fresh array, as a capture
loop delivers): from ``--video`` (looped) or, by default, a photo cycling through sharp, blurred
and noisy versions. It feeds a :class:`~glia_edge.stream.QualityMonitor`, which never blocks it:
what the model cannot keep up with is dropped or skipped by sampling. Meanwhile a sampler records
the process's resident memory (psutil) every ``--interval`` seconds. The report (stdout, and
``--out`` as JSON with the whole curve) gives the frames scored per second, the dropped and
skipped counts, and the memory curve: RSS at each quarter of the run and the slope over its
second half, where a leak shows as a steady climb after warm-up.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)


def synthetic_frames(size: tuple[int, int], variants: int = 12, seed: int = 0) -> list[np.ndarray]:
    """BGR frames of a bundled photo (or a gradient without scikit-image) from sharp to degraded."""
    from PIL import Image, ImageFilter

    try:
        import skimage.data

        base = Image.fromarray(skimage.data.astronaut())
    except ImportError:
        ramp = np.linspace(0, 255, 512, dtype=np.float32)
        base = Image.fromarray(np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).astype(np.uint8))
    base = base.resize(size, Image.Resampling.BILINEAR)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(variants):
        s = i / max(1, variants - 1)
        arr = np.asarray(base.filter(ImageFilter.GaussianBlur(3.0 * s)), np.float32)
        arr = np.clip(arr + rng.normal(0, 15.0 * s, arr.shape), 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(arr[:, :, ::-1]))
    return out


def _video_frames(path: str, size: tuple[int, int] | None, limit: int = 600) -> list[np.ndarray]:
    from glia_edge.stream import VideoSource

    frames = [f.image for f in VideoSource(path, max_frames=limit)]
    if size is not None:
        import cv2

        frames = [cv2.resize(f, size) for f in frames]
    return frames


def paced(frames: Sequence[np.ndarray], count: int, fps: float | None, stop: threading.Event) -> Iterator[Any]:
    """Yield ``count`` fresh copies of ``frames`` (looped) with media timestamps, at ``fps`` if given."""
    start = time.monotonic()
    for i in range(count):
        ts = i / (fps or 30.0)
        if fps and stop.wait(max(0.0, start + ts - time.monotonic())):
            return
        yield frames[i % len(frames)].copy(), ts


class RssSampler:
    """Records (seconds, RSS MiB, frames seen, scored, dropped) every ``interval`` seconds."""

    def __init__(self, monitor: Any, interval: float) -> None:
        import psutil

        self.proc, self.monitor, self.interval = psutil.Process(os.getpid()), monitor, interval
        self.samples: list[tuple[float, float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)
        self._t0 = time.monotonic()

    def _sample(self) -> None:
        s = self.monitor.stats
        rss = self.proc.memory_info().rss / 2**20
        self.samples.append((round(time.monotonic() - self._t0, 2), round(rss, 1), s.seen, s.scored, s.dropped))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def memory_summary(samples: list[tuple[float, float, int, int, int]]) -> dict[str, Any]:
    """RSS at 0/25/50/75/100% of the run, its peak, and the MiB/min slope over the second half."""
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    quarters = {f"rss_mb_at_{q}pct": float(rss[min(len(rss) - 1, round(q / 100 * (len(rss) - 1)))])
                for q in (0, 25, 50, 75, 100)}
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half], rss[half], 1)[0] * 60) if half.sum() >= 3 else float("nan")
    return {**quarters, "rss_mb_peak": float(rss.max()), "rss_slope_mb_per_min_second_half": round(slope, 3)}


def _plot(path: Path, samples: list[tuple[float, float, int, int, int]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([s[2] for s in samples], [s[1] for s in samples], "-")
    ax.set(xlabel="frames delivered", ylabel="resident memory (MiB)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import glia_edge
    from glia_edge.stream import QualityMonitor

    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    frames = _video_frames(args.video, size) if args.video else synthetic_frames(size or (640, 480))
    options: dict[str, Any] = {"threads": args.threads} if args.threads else {}
    if args.mode:
        options["mode"] = args.mode
    model = glia_edge.load(args.model, **options)
    monitor = QualityMonitor(model, every_n=args.every_n, max_fps=args.max_fps, crops=args.crops,
                             queue_size=args.queue_size, block=not args.realtime)
    stop = threading.Event()
    t0 = time.monotonic()
    with RssSampler(monitor, args.interval) as sampler:
        try:
            for _ in monitor.run(paced(frames, args.frames, args.fps if args.realtime else None, stop)):
                pass
        finally:
            stop.set()
    wall = time.monotonic() - t0
    stats = monitor.stats
    model.close()
    report = {"model": str(args.model), "backend": repr(model), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "frame_size": list(frames[0].shape[1::-1]), "fps_offered": args.fps,
              "realtime": args.realtime, "every_n": args.every_n, "max_fps": args.max_fps, "crops": args.crops,
              "queue_size": args.queue_size, "frames": stats.seen, "scored": stats.scored,
              "skipped": stats.skipped, "dropped": stats.dropped, "errors": stats.errors,
              "wall_s": round(wall, 2), "delivered_fps": round(stats.seen / wall, 2),
              "scored_fps": round(stats.scored / wall, 2), **memory_summary(sampler.samples),
              "samples": {"columns": ["t_s", "rss_mb", "seen", "scored", "dropped"], "rows": sampler.samples}}
    if args.plot:
        _plot(Path(args.plot), sampler.samples, f"{args.model}: {stats.seen} frames")
    return report


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m glia_edge.benchmarks.stream_soak", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="artifact (default: the packaged model)")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--fps", type=float, default=30.0, help="rate the producer delivers frames at")
    p.add_argument("--every-n", type=int, default=1)
    p.add_argument("--max-fps", type=float, default=None)
    p.add_argument("--crops", type=int, default=1, choices=(1, 5, 9))
    p.add_argument("--queue-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mode", choices=("latency", "throughput"), default=None, help="OpenVINO performance hint")
    p.add_argument("--video", default=None, help="loop the first 600 frames of this video instead of a photo")
    p.add_argument("--size", default=None, help="frame size WxH (default 640x480, or the video's own)")
    p.add_argument("--no-realtime", dest="realtime", action="store_false",
                   help="deliver frames as fast as they are scored (block instead of drop)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between memory samples")
    p.add_argument("--out", default=None, help="write the report (with the whole curve) here as JSON")
    p.add_argument("--plot", default=None, help="save the memory curve here (PNG)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    report = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    brief = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(brief, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
