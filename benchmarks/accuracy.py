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
from glia_edge.metrics import Agreement, agreement, plcc, srcc

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


def labels_by_path(csv_path: str | Path) -> dict[Path, float]:
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
        table = labels_by_path(labels)
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


def score_against_reference(scores: Sequence[float], reference: Sequence[float],
                            labels: Sequence[float] | None = None) -> tuple[Agreement, float | None, float | None]:
    """Agreement with the PyTorch FP32 scores, and SRCC/PLCC with the labels (NaN if undefined)."""
    agree = agreement(scores, reference)
    if labels is None:
        return agree, None, None
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(s[ok]) == 0 or np.ptp(y[ok]) == 0:
        return agree, float("nan"), float("nan")
    return agree, srcc(s[ok], y[ok]), plcc(s[ok], y[ok])
