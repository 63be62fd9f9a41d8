"""End-to-end speed, what users of ``glia-edge score`` and ``watch`` see, beside the model-only speed.

Three measurements on one artifact, in one process:

- **files**: images/s scoring JPEG files of each size through :meth:`Backend.iter_scores`, on
  the old decode path (preprocessing version 1, full decode, serial on the main thread) and the
  new one (version 2, decode threads), the new path's decoding alone (the same threads, nothing
  inferred: the ceiling of the new path on this machine) and the model alone on the same images'
  pre-cut crops, alternating. Ratios: new / old, and each path / model-only.
- **frames**: per-frame cost of preprocessing a BGR camera frame (1080p, 4K) through version 1,
  version 2 as first written (the whole averaged frame resized, then cut) and version 2 as the
  camera path runs it (``Backend.crop_batch``: one centre crop computed from only the rows and
  columns it needs, the same pixels within one level), alternating; of inferring its crop; and the share of a
  frame's time spent in preprocessing.

The JPEGs are generated (textured, seeded, quality 90) when no folder is given.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from glia_edge.errors import DatasetError
from glia_edge.runtimes.decode_pool import decode_ahead

log = logging.getLogger(__name__)

FRAME_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}


@dataclass
class EndToEndRow:
    kind: str  # "files" or "frame"
    input: str  # "40 JPEGs 4000x3000" / "1920x1080 BGR frame"
    path: str  # "old: serial, exact decode (v1)" / "new: ..." / "model only"
    images_per_s: float | None = None
    ms_per_image: float | None = None
    preprocess_ms: float | None = None
    infer_ms: float | None = None
    preprocess_share: float | None = None
    vs_old: float | None = None
    vs_model_only: float | None = None


def parse_size(text: str) -> tuple[int, int]:
    """``4000x3000`` -> (4000, 3000)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise ValueError(f"expected a size like 4000x3000, got {text!r}")
    return int(w), int(h)


def make_jpegs(folder: Path, size: tuple[int, int], count: int, seed: int = 0) -> list[Path]:
    """``count`` textured JPEGs of ``size`` (reused when already there): smooth colour fields,
    edges and sensor-like noise, so the decoder and the resampler do realistic work."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    for i in range(count):
        path = folder / f"e2e-{w}x{h}-{i:03d}.jpg"
        if not path.is_file():
            rng = np.random.default_rng([seed, w, h, i])
            small = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
            img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
            draw = ImageDraw.Draw(img)
            for _ in range(40):
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                draw.line((x0, y0, x0 + int(rng.integers(-w // 4, w // 4)), y0 + int(rng.integers(-h // 4, h // 4))),
                          fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 8)))
            arr = np.asarray(img).astype(np.int16) + rng.normal(0, 5, (h, w, 3)).astype(np.int16)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _versioned(model: Any, version: int, workers: int, *, infer: bool = True) -> Callable[[Sequence[Any]], None]:
    """Score ``items`` with preprocessing ``version`` on ``workers`` decode threads; with ``infer``
    False, only decode them on the same threads as :meth:`Backend.iter_scores` would."""
    def run(items: Sequence[Any]) -> None:
        base = model.preprocess_config
        model.preprocess_config = base.replace(version=version)
        try:
            if infer:
                results = [(r.source, r.error) for r in model.iter_scores(items, decode_workers=workers)]
            else:
                results = [(d.source, d.error) for d in
                           decode_ahead(items, model.crop_batch, workers=workers, ahead=2 * workers)]
        finally:
            model.preprocess_config = base
        bad = [(source, error) for source, error in results if error is not None]
        if bad:
            raise RuntimeError(f"{bad[0][0]}: {bad[0][1]}")
    return run


def file_rows(model: Any, paths: Sequence[Path], label: str, *, workers: int, repeats: int) -> list[EndToEndRow]:
    """Old path, new path, the new path's decoding alone and model only on ``paths``; the four
    alternate, the median counts."""
    items = [str(p) for p in paths]
    crops = np.concatenate([model.crop_batch(p) for p in items])

    def paths_over(files: list[str], batch: np.ndarray) -> dict[str, Callable[[], Any]]:
        return {
            "old": lambda: _versioned(model, 1, 0)(files),
            "new": lambda: _versioned(model, 2, workers)(files),
            # the new path's threads with no inference behind them: how fast it could go on this machine
            "decode": lambda: _versioned(model, 2, workers, infer=False)(files),
            "model": lambda: model.predict_batch(batch),
        }

    runs = paths_over(items, crops)
    # Every path warmed once (threads, runtime, decoders): an unwarmed first path paid its set-up
    # in the first size's figures and inflated that size's ratio to the old path.
    for warm_up in paths_over(items[:2], crops[:model.batch_size]).values():
        warm_up()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(_timed(run))
    rate = {k: len(items) / statistics.median(v) for k, v in times.items()}
    return [
        EndToEndRow("files", label, "old: exact full decode (v1), serial", rate["old"], 1000 / rate["old"],
                    vs_model_only=rate["old"] / rate["model"]),
        EndToEndRow("files", label, f"new: fast decode (v2), {workers} decode threads", rate["new"],
                    1000 / rate["new"], vs_old=rate["new"] / rate["old"], vs_model_only=rate["new"] / rate["model"]),
        EndToEndRow("files", label, f"decode only (v2, {workers} decode threads, nothing inferred)", rate["decode"],
                    1000 / rate["decode"], vs_old=rate["decode"] / rate["old"],
                    vs_model_only=rate["decode"] / rate["model"]),
        EndToEndRow("files", label, f"model only (batch {min(len(crops), model.batch_size)})", rate["model"], 1000 / rate["model"]),
    ]


def frame_rows(model: Any, name: str, size: tuple[int, int], *, repeats: int, crops: int | None = None) -> list[EndToEndRow]:
    """Per-frame preprocessing (both versions) and inference of one BGR frame of ``size``."""
    rng = np.random.default_rng(list(size))
    small = rng.integers(0, 256, (size[1] // 32, size[0] // 32, 3), dtype=np.uint8)
    import cv2

    frame = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
    frame = np.clip(frame.astype(np.int16) + rng.normal(0, 5, frame.shape).astype(np.int16), 0, 255).astype(np.uint8)
    from glia_edge.preprocess import CENTRE_CROP_MAX_LEVELS, crops_from_image, load_reduced

    base = model.preprocess_config
    v1, v2 = base.replace(version=1), base.replace(version=2)
    paths = {
        "old: exact (v1)": lambda: crops_from_image(load_reduced(frame, v1, bgr=True), v1, crops),
        # version 2 as first written: the whole averaged frame resized, then cut; the next row within one level
        "v2, whole-frame resize": lambda: crops_from_image(load_reduced(frame, v2, bgr=True), v2, crops),
        "new: fast (v2)": lambda: model.crop_batch(frame, crops=crops, bgr=True),  # the camera path's call
    }
    cost: dict[str, list[float]] = {path: [] for path in paths}
    infer: list[float] = []
    model.preprocess_config = v2
    try:
        batch = model.crop_batch(frame, crops=crops, bgr=True)
        levels = float(np.abs(batch - paths["v2, whole-frame resize"]()).max()) * 255
        if levels > CENTRE_CROP_MAX_LEVELS + 1e-3:
            raise RuntimeError(f"the fast version-2 crop differs from the whole-frame one by {levels:.1f} levels")
        for _ in range(repeats):  # the paths alternate, the medians count
            for path, fn in paths.items():
                cost[path].append(_timed(fn))
            infer.append(_timed(lambda: model.predict_batch(batch)))
    finally:
        model.preprocess_config = base
    inf = statistics.median(infer) * 1000
    rows = []
    for path in paths:
        pre = statistics.median(cost[path]) * 1000
        rows.append(EndToEndRow("frame", f"{name} {size[0]}x{size[1]} BGR frame", path, 1000 / (pre + inf), pre + inf,
                                preprocess_ms=pre, infer_ms=inf, preprocess_share=pre / (pre + inf)))
    for row in rows[1:]:
        row.vs_old = row.images_per_s / rows[0].images_per_s  # type: ignore[operator]
    return rows


def run_end_to_end(artifact: Path, *, sizes: Sequence[tuple[int, int]], count: int, files: Path | None,
                   frames: Sequence[str], workers: int, repeats: int, work: Path,
                   load_options: dict[str, Any] | None = None) -> list[EndToEndRow]:
    """Every row for ``artifact`` (see the module docstring)."""
    from glia_edge.runtimes.base import load_batched

    rows: list[EndToEndRow] = []
    with load_batched(artifact, **(load_options or {})) as model:  # opened as ``glia-edge score`` opens it
        if files is not None:
            from glia_edge.preprocess import find_images

            paths = find_images(files)[:count]
            if not paths:
                raise DatasetError(f"--e2e-files: {files}: no images found")
            rows += file_rows(model, paths, f"{len(paths)} files from {files}", workers=workers, repeats=repeats)
        for size in sizes:
            paths = make_jpegs(work / "e2e-jpegs", size, count)
            log.info("end-to-end: %d JPEGs of %dx%d", count, *size)
            rows += file_rows(model, paths, f"{count} JPEGs {size[0]}x{size[1]}", workers=workers, repeats=repeats)
        for name in frames:
            rows += frame_rows(model, name, FRAME_SIZES[name], repeats=max(repeats, 10) * 3)
    return rows


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def to_markdown(rows: Sequence[EndToEndRow], machine_line: str, command: str) -> str:
    lines = [f"machine: {machine_line}", "", f"command: `{command}`", "",
             "| input | path | images/s | ms/image | preprocess ms | infer ms | preprocess share | x old | "
             "share of model-only |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.input} | {r.path} | {_cell(r.images_per_s, '.1f')} | {_cell(r.ms_per_image, '.1f')} | "
                     f"{_cell(r.preprocess_ms, '.2f')} | {_cell(r.infer_ms, '.2f')} | "
                     f"{_cell(r.preprocess_share, '.0%')} | {_cell(r.vs_old, '.2f')} | {_cell(r.vs_model_only, '.1%')} |")
    return "\n".join(lines) + "\n"


def to_dict(rows: Sequence[EndToEndRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
