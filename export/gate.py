"""The accuracy gate: score a validation set with an exported artifact and with PyTorch, and compare.

Each export scores the same images (the calibration images by default, or ``--val DIR|CSV``)
through ``glia_edge.load(artifact)`` and through the PyTorch reference
(:class:`glia_edge.runtimes.torch.TorchBackend` on the checkpoint), with the same crops, and
reports Spearman(artifact, reference), the max |delta score| (also as a fraction of the score
range) and, when the CSV carries labels, SRCC/PLCC of both against them. INT8 exports that "work"
but drift are the most reported export failure, so the numbers always travel with the artifact.

``max_drop`` fails the gate when the artifact loses more than that much rank agreement:
``1 - Spearman(artifact, reference)``, or, with labels, the SRCC lost against the labels,
whichever is larger.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glia_edge.errors import AccuracyGateError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateReport:
    """What the gate measured; ``drop`` is the number ``max_drop`` is compared with."""

    images: int
    spearman: float
    max_abs_delta: float
    max_rel_delta: float
    drop: float
    pearson: float | None = None
    mean_abs_delta: float | None = None
    srcc_reference: float | None = None
    plcc_reference: float | None = None
    srcc_artifact: float | None = None
    plcc_artifact: float | None = None
    failed_images: int = 0
    #: Images PyTorch scored but the artifact gave NaN/inf for (an overflowing FP16/INT8 graph):
    #: disagreement, not unreadable images, so the gate fails on them when ``max_drop`` is given.
    nonfinite: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (f"Spearman vs PyTorch {self.spearman:.4f}, max |delta| {self.max_abs_delta:.4g} "
                f"({self.max_rel_delta:.2%} of range) over {self.images} images")
        if self.srcc_artifact is not None:
            text += (f"; vs labels SRCC {self.srcc_artifact:.4f} (PyTorch {self.srcc_reference:.4f}), "
                     f"PLCC {self.plcc_artifact:.4f} (PyTorch {self.plcc_reference:.4f})")
        if self.nonfinite:
            text += f"; the artifact gave non-finite scores for {self.nonfinite} images PyTorch scored"
        return text


def compare(artifact: np.ndarray, reference: np.ndarray, score_range: float,
            labels: np.ndarray | None = None, failed: int = 0, nonfinite: int = 0) -> GateReport:
    """The gate's numbers for matched per-image scores (:func:`glia_edge.metrics.agreement`)."""
    from glia_edge import metrics

    agree = metrics.agreement(artifact, reference)
    drop = 1.0 - agree.spearman
    extra: dict[str, float] = {}
    if labels is not None and len(labels) > 2:
        extra["srcc_reference"], extra["plcc_reference"] = metrics.srcc(reference, labels), metrics.plcc(reference, labels)
        extra["srcc_artifact"], extra["plcc_artifact"] = metrics.srcc(artifact, labels), metrics.plcc(artifact, labels)
        drop = max(drop, extra["srcc_reference"] - extra["srcc_artifact"])
    return GateReport(images=agree.compared, spearman=agree.spearman, max_abs_delta=agree.max_abs_delta,
                      max_rel_delta=agree.max_abs_delta / score_range if score_range else agree.max_abs_delta,
                      drop=drop, pearson=agree.pearson, mean_abs_delta=agree.mean_abs_delta,
                      failed_images=failed, nonfinite=nonfinite, **extra)


#: Below this many images scored by both, rank agreement is undefined and the gate cannot judge.
MIN_GATE_IMAGES = 3


def gate_too_small(count: int, source: object) -> str | None:
    """Why ``count`` validation images cannot gate an export (None when they can)."""
    if count >= MIN_GATE_IMAGES:
        return None
    return (f"accuracy gate needs at least {MIN_GATE_IMAGES} validation images, {source} gives {count} "
            f"(pass --val DIR|CSV or a larger --calib-size)")


def run_gate(artifact: str | Path, checkpoint: str | Path, images: Sequence[Path], *,
             labels: Sequence[float] | None = None, crops: int = 1, max_drop: float | None = None,
             backend_options: dict[str, Any] | None = None) -> GateReport | None:
    """Score ``images`` with the artifact and the PyTorch reference; raise if ``max_drop`` is exceeded.

    None (with a warning) when fewer than :data:`MIN_GATE_IMAGES` images could be compared and no
    ``max_drop`` asks for a verdict; with ``max_drop`` that is an :class:`AccuracyGateError`.
    """
    import glia_edge
    from glia_edge.runtimes.torch import TorchBackend

    paths = [str(p) for p in images]
    with glia_edge.load(artifact, **(backend_options or {})) as art:
        got = art.score_paths(paths, crops=crops)
        score_range = art.meta.score_spec.range
    with TorchBackend(checkpoint) as ref:
        want = ref.score_paths(paths, crops=crops)
    ok = np.isfinite(got) & np.isfinite(want)
    # PyTorch scored it, the artifact did not: the artifact's fault (overflow), not an unreadable image.
    nonfinite = int((~np.isfinite(got) & np.isfinite(want)).sum())
    if max_drop is not None and nonfinite:
        raise AccuracyGateError(f"accuracy gate failed: {artifact} gave non-finite scores for {nonfinite} of "
                                f"{len(paths)} validation images that PyTorch scored")
    if ok.sum() < MIN_GATE_IMAGES:
        why = (f"accuracy gate: only {int(ok.sum())} of {len(paths)} validation images could be scored "
               f"(need {MIN_GATE_IMAGES})" + (f"; {nonfinite} non-finite from the artifact" if nonfinite else ""))
        if max_drop is not None:
            raise AccuracyGateError(why)
        log.warning("%s: gate skipped", why)
        return None
    label_arr = np.asarray(labels, dtype=np.float64)[ok] if labels is not None else None
    report = compare(got[ok], want[ok], score_range, label_arr, failed=int((~ok).sum()) - nonfinite,
                     nonfinite=nonfinite)
    log.info("accuracy gate: %s", report.summary())
    if max_drop is not None and report.drop > max_drop:
        raise AccuracyGateError(f"accuracy gate failed: drop {report.drop:.4f} > --max-drop {max_drop} "
                                f"({report.summary()})")
    return report
