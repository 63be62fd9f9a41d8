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
    srcc_reference: float | None = None
    plcc_reference: float | None = None
    srcc_artifact: float | None = None
    plcc_artifact: float | None = None
    failed_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (f"Spearman vs PyTorch {self.spearman:.4f}, max |delta| {self.max_abs_delta:.4g} "
                f"({self.max_rel_delta:.2%} of range) over {self.images} images")
        if self.srcc_artifact is not None:
            text += (f"; vs labels SRCC {self.srcc_artifact:.4f} (PyTorch {self.srcc_reference:.4f}), "
                     f"PLCC {self.plcc_artifact:.4f} (PyTorch {self.plcc_reference:.4f})")
        return text


def _correlations(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """SRCC and PLCC; uses ``glia_edge.metrics`` (PLCC after the logistic fit) where it exists."""
    try:
        from glia_edge import metrics  # type: ignore[attr-defined]

        return float(metrics.srcc(pred, labels)), float(metrics.plcc(pred, labels))
    except (ImportError, AttributeError):
        from scipy import stats

        return float(stats.spearmanr(pred, labels)[0]), float(stats.pearsonr(pred, labels)[0])


def _scores(backend: Any, images: Sequence[Path], crops: int) -> dict[str, float]:
    results = backend.iter_scores([str(p) for p in images], crops=crops)
    out = {}
    for res in results:
        if res.ok:
            out[res.source] = res.score
        else:
            log.warning("gate: %s not scored (%s)", res.source, res.error)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(stats.spearmanr(a, b)[0])


def compare(artifact: np.ndarray, reference: np.ndarray, score_range: float,
            labels: np.ndarray | None = None, failed: int = 0) -> GateReport:
    """The gate's numbers for matched per-image scores."""
    delta = float(np.max(np.abs(artifact - reference))) if len(artifact) else 0.0
    spearman = _spearman(artifact, reference)
    drop = 1.0 - spearman
    extra: dict[str, float] = {}
    if labels is not None and len(labels) > 2:
        extra["srcc_reference"], extra["plcc_reference"] = _correlations(reference, labels)
        extra["srcc_artifact"], extra["plcc_artifact"] = _correlations(artifact, labels)
        drop = max(drop, extra["srcc_reference"] - extra["srcc_artifact"])
    return GateReport(images=len(artifact), spearman=spearman, max_abs_delta=delta,
                      max_rel_delta=delta / score_range if score_range else delta, drop=drop,
                      failed_images=failed, **extra)


def run_gate(artifact: str | Path, checkpoint: str | Path, images: Sequence[Path], *,
             labels: Sequence[float] | None = None, crops: int = 1, max_drop: float | None = None,
             backend_options: dict[str, Any] | None = None) -> GateReport:
    """Score ``images`` with the artifact and the PyTorch reference; raise if ``max_drop`` is exceeded."""
    import glia_edge
    from glia_edge.runtimes.torch import TorchBackend

    with glia_edge.load(artifact, **(backend_options or {})) as art:
        got = _scores(art, images, crops)
        score_range = art.meta.score_spec.range
    with TorchBackend(checkpoint) as ref:
        want = _scores(ref, images, crops)
    names = [str(p) for p in images if str(p) in got and str(p) in want]
    if len(names) < 2:
        raise AccuracyGateError(f"accuracy gate: only {len(names)} of {len(images)} validation images could be scored")
    label_arr = None
    if labels is not None:
        by_name = dict(zip((str(p) for p in images), labels))
        label_arr = np.array([by_name[n] for n in names], dtype=np.float64)
    report = compare(np.array([got[n] for n in names]), np.array([want[n] for n in names]), score_range,
                     label_arr, failed=len(images) - len(names))
    log.info("accuracy gate: %s", report.summary())
    if max_drop is not None and report.drop > max_drop:
        raise AccuracyGateError(f"accuracy gate failed: drop {report.drop:.4f} > --max-drop {max_drop} "
                                f"({report.summary()})")
    return report
