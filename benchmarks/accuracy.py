"""Accuracy columns of a benchmark: rank agreement with PyTorch FP32, and SRCC/PLCC on labels.

Every backend scores the same held-out images with the same preprocessing. Its scores are
compared with the PyTorch FP32 eager scores by Spearman (does it rank images the same way? an
INT8 artifact that reorders images is a defect, not a speed-up) and by the largest absolute
difference; when labels are known, SRCC and PLCC (after the 4-parameter logistic, as IQA papers
report it) against them, computed by :mod:`glia_edge.metrics`.

Without ``--images`` the benchmark writes its own held-out set with
:func:`glia_edge.distortions.make_dataset`: graded synthetic distortions of bundled photos, with
labels from the distortion level, and a calibration set from *other* photos so the INT8
calibration never sees an evaluation image.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from glia_edge.errors import DatasetError

log = logging.getLogger(__name__)

#: Bundled photos for the built-in evaluation set, and disjoint ones for INT8 calibration.
EVAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CALIB_PHOTOS = ("stereo_motorcycle", "immunohistochemistry", "hubble_deep_field", "retina")


@dataclass(frozen=True)
class EvalSet:
    """Held-out images, with labels when known, and where they came from."""

    paths: tuple[Path, ...]
    labels: tuple[float, ...] | None
    source: str

    def __len__(self) -> int:
        return len(self.paths)


def _subset(paths: Sequence[Path], labels: Sequence[float] | None, size: int | None,
            seed: int = 0) -> tuple[tuple[Path, ...], tuple[float, ...] | None]:
    if size is None or size >= len(paths):
        return tuple(paths), tuple(labels) if labels is not None else None
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), size, replace=False))
    return tuple(paths[i] for i in keep), tuple(labels[i] for i in keep) if labels is not None else None


def read_labels(csv_path: str | Path) -> dict[Path, float]:
    """``path -> label`` from a CSV with an image column and a score/MOS column."""
    from glia_edge.export.calibration import read_image_list

    listing = read_image_list(csv_path)
    if listing.labels is None:
        raise DatasetError(f"{csv_path}: no label column (score, mos, dmos, label or quality)")
    return {Path(p).resolve(): float(v) for p, v in zip(listing.paths, listing.labels)}


def load_eval_set(images: str | Path, labels: str | Path | None = None, size: int | None = None) -> EvalSet:
    """Images from a folder or CSV; labels from the CSV itself or from a separate ``labels`` CSV."""
    from glia_edge.export.calibration import read_image_list

    listing = read_image_list(images)
    paths = [Path(p).resolve() for p in listing.paths]
    values: list[float] | None = list(listing.labels) if listing.labels is not None else None
    if labels is not None:
        table = read_labels(labels)
        missing = [p for p in paths if p not in table]
        if missing:
            raise DatasetError(f"{labels}: no label for {len(missing)} of {len(paths)} images (first: {missing[0]})")
        values = [table[p] for p in paths]
    chosen, chosen_labels = _subset(paths, values, size)
    return EvalSet(chosen, chosen_labels, str(images))


def builtin_set(workdir: str | Path, name: str, photos: Sequence[str], *, levels: int = 5, seed: int = 0) -> Path:
    """``workdir/name/labels.csv``: graded synthetic distortions of bundled photos (one tile each),
    written once and reused. Labels follow the distortion level (see ``glia_edge.distortions``)."""
    from glia_edge.distortions import make_dataset, reference_images

    csv_path = Path(workdir) / name / "labels.csv"
    if not csv_path.is_file():
        log.info("writing the built-in %s set (%d photos) to %s", name, len(photos), csv_path.parent)
        make_dataset(csv_path.parent, reference_images(names=photos, max_tiles=1), levels=levels, seed=seed,
                     overwrite=True)
    return csv_path


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation over the pairs where both are finite (NaN if undefined)."""
    from glia_edge.metrics import srcc

    x, y = _finite_pairs(a, b)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return srcc(x, y)


def plcc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """PLCC with labels after the usual 4-parameter logistic mapping (glia_edge.metrics)."""
    from glia_edge.metrics import plcc as _plcc

    x, y = _finite_pairs(scores, labels)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return _plcc(x, y)


def _finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"score arrays differ in length: {x.shape} vs {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


@dataclass
class Agreement:
    """How one backend's scores relate to the PyTorch FP32 scores and to the labels."""

    spearman_vs_torch: float
    max_abs_diff: float
    srcc: float | None = None
    plcc: float | None = None
    scored: int = 0
    failed: int = 0


def agreement(scores: Sequence[float], reference: Sequence[float],
              labels: Sequence[float] | None = None) -> Agreement:
    """Spearman and max |difference| against the reference scores; SRCC/PLCC against labels."""
    s, r = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    both = np.isfinite(s) & np.isfinite(r)
    diff = float(np.max(np.abs(s[both] - r[both]))) if both.any() else float("nan")
    out = Agreement(spearman_vs_torch=spearman(s, r), max_abs_diff=diff, scored=int(np.isfinite(s).sum()),
                    failed=int((~np.isfinite(s)).sum()))
    if labels is not None:
        out.srcc, out.plcc = spearman(s, labels), plcc(s, labels)
    return out


def score_images(backend: object, paths: Sequence[Path], crops: int) -> np.ndarray:
    """One score per image (NaN where the image could not be used; the rest go on)."""
    scores = np.full(len(paths), np.nan)
    for i, result in enumerate(backend.iter_scores(list(paths), crops=crops)):  # type: ignore[attr-defined]
        if result.ok:
            scores[i] = result.score
        else:
            log.warning("%s: %s", result.source, result.error)
    return scores
