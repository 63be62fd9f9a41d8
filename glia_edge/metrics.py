"""IQA agreement metrics: SRCC, KRCC, and PLCC / RMSE after the 4-parameter logistic fit.

The logistic mapping is VQEG's (Final Report on FR-TV Phase II, 2003) in its 4-parameter form
used across blind IQA papers (LoDa included):

    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

fitted with ``scipy.optimize.curve_fit`` (trust-region: Levenberg-Marquardt stalls when a
start value is exactly 0) from a data-driven start (b1, b2 at the MOS extremes in
the direction of the correlation, b3 at the mean prediction, b4 at its spread). When the fit
fails, or fits worse than a straight line, a least-squares line is used instead (logged), so a
metric is always defined for non-constant predictions.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats

log = logging.getLogger(__name__)

ArrayLike = Sequence[float] | np.ndarray


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -60.0, 60.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _pair(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(pred, dtype=np.float64).reshape(-1), np.asarray(mos, dtype=np.float64).reshape(-1)
    if p.shape != m.shape:
        raise ValueError(f"{p.size} predictions for {m.size} scores")
    if p.size < 3:
        raise ValueError(f"need at least 3 pairs for IQA metrics, got {p.size}")
    # A NaN would reach LAPACK in the logistic fit (LinAlgError plus its stderr noise): say so here.
    bad_p, bad_m = int((~np.isfinite(p)).sum()), int((~np.isfinite(m)).sum())
    if bad_p or bad_m:
        raise ValueError(f"IQA metrics need finite values: {bad_p} prediction(s) and {bad_m} score(s) of {p.size} "
                         "are NaN or infinite (leave failed images out first)")
    return p, m


def _quiet(fn: Any, *args: Any) -> float:
    """A scipy correlation, NaN (not a warning) when an input is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(*args)[0])
    return value


def srcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Spearman rank-order correlation."""
    return _quiet(stats.spearmanr, *_pair(pred, mos))


def krcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Kendall rank-order correlation (tau-b)."""
    return _quiet(stats.kendalltau, *_pair(pred, mos))


def _linear(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    slope, intercept = np.polyfit(p, m, 1)
    return slope * p + intercept


def fit_logistic(pred: ArrayLike, mos: ArrayLike) -> np.ndarray:
    """Predictions mapped onto the MOS scale by the 4-parameter logistic (or the linear fallback)."""
    p, m = _pair(pred, mos)
    if np.ptp(p) == 0:
        return np.full_like(m, m.mean())
    increasing = _quiet(stats.pearsonr, p, m) >= 0 if np.ptp(m) > 0 else True
    hi, lo = (m.max(), m.min()) if increasing else (m.min(), m.max())
    start = [hi, lo, float(p.mean()), float(p.std()) or 1.0]
    linear = _linear(p, m)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, p, m, p0=start, method="trf", maxfev=20000)
        fitted = logistic4(p, *params)
    except (RuntimeError, ValueError, optimize.OptimizeWarning) as exc:
        log.debug("logistic fit failed (%s); using a linear fit", exc)
        return linear
    if not np.all(np.isfinite(fitted)) or np.sum((fitted - m) ** 2) > np.sum((linear - m) ** 2):
        log.debug("logistic fit worse than linear; using the linear fit")
        return linear
    return fitted


def plcc(pred: ArrayLike, mos: ArrayLike, fit: bool = True) -> float:
    """Pearson linear correlation, after the logistic mapping unless ``fit=False``."""
    p, m = _pair(pred, mos)
    return _quiet(stats.pearsonr, fit_logistic(p, m) if fit else p, m)


def rmse(pred: ArrayLike, mos: ArrayLike, fit: bool = True) -> float:
    """Root mean squared error on the MOS scale, after the logistic mapping unless ``fit=False``."""
    p, m = _pair(pred, mos)
    mapped = fit_logistic(p, m) if fit else p
    return float(np.sqrt(np.mean((mapped - m) ** 2)))


@dataclass(frozen=True)
class IQAMetrics:
    srcc: float
    plcc: float
    krcc: float
    rmse: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def iqa_metrics(pred: ArrayLike, mos: ArrayLike) -> IQAMetrics:
    """All four metrics at once (the logistic is fitted once)."""
    p, m = _pair(pred, mos)
    mapped = fit_logistic(p, m)
    return IQAMetrics(srcc=_quiet(stats.spearmanr, p, m), plcc=_quiet(stats.pearsonr, mapped, m),
                      krcc=_quiet(stats.kendalltau, p, m), rmse=float(np.sqrt(np.mean((mapped - m) ** 2))), n=int(p.size))


def median_metrics(results: Sequence[IQAMetrics]) -> dict[str, float]:
    """Median of each metric over splits (the protocol reports medians over 10 splits)."""
    if not results:
        raise ValueError("no results to summarise")
    return {k: float(np.median([getattr(r, k) for r in results])) for k in ("srcc", "plcc", "krcc", "rmse")}


@dataclass(frozen=True)
class Agreement:
    """How closely one set of scores follows a reference set of the same images.

    ``spearman``/``pearson``: rank and linear correlation; 1.0 when both sets are the same
    constant, 0.0 when only one of them is constant (it kept no ranking), NaN below 3 pairs.
    ``max_abs_delta``/``mean_abs_delta`` are on the score scale. Only pairs where both scores are
    finite count (``compared``); ``missing`` is how many pairs were left out.
    """

    spearman: float
    pearson: float
    max_abs_delta: float
    mean_abs_delta: float
    compared: int
    missing: int = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _constant_rule(x: np.ndarray, y: np.ndarray) -> float | None:
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        return None
    return 1.0 if np.ptp(x) == 0 and np.ptp(y) == 0 and np.allclose(x, y) else 0.0


def agreement(scores: ArrayLike, reference: ArrayLike) -> Agreement:
    """The one agreement rule of the accuracy gate, the benchmark and evaluation (see :class:`Agreement`)."""
    s, r = np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(reference, dtype=np.float64).reshape(-1)
    if s.shape != r.shape:
        raise ValueError(f"{s.size} scores for {r.size} reference scores")
    both = np.isfinite(s) & np.isfinite(r)
    x, y = s[both], r[both]
    delta = np.abs(x - y)
    max_d, mean_d = (float(delta.max()), float(delta.mean())) if x.size else (float("nan"), float("nan"))
    if x.size < 3:
        rho = pearson = float("nan")
    elif (fixed := _constant_rule(x, y)) is not None:
        rho = pearson = fixed
    else:
        rho, pearson = _quiet(stats.spearmanr, x, y), _quiet(stats.pearsonr, x, y)
    return Agreement(spearman=rho, pearson=pearson, max_abs_delta=max_d, mean_abs_delta=mean_d,
                     compared=int(x.size), missing=int(s.size - x.size))
