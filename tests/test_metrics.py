"""IQA metrics against scipy on known inputs, the logistic fit and its fallback, and the loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from glia_edge import metrics
from glia_edge.losses import IQALoss, plcc_loss
from glia_edge.metrics import fit_logistic, iqa_metrics, krcc, logistic4, median_metrics, plcc, rmse, srcc

PRED = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.95, 0.2, 0.5])
MOS = np.array([1.2, 2.9, 2.5, 4.1, 4.3, 4.8, 1.9, 3.0])


def test_rank_correlations_match_scipy() -> None:
    assert srcc(PRED, MOS) == pytest.approx(stats.spearmanr(PRED, MOS)[0])
    assert krcc(PRED, MOS) == pytest.approx(stats.kendalltau(PRED, MOS)[0])
    assert srcc([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert srcc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert krcc([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.8)  # 9 concordant, 1 discordant of 10


def test_plcc_without_fit_is_pearson() -> None:
    assert plcc(PRED, MOS, fit=False) == pytest.approx(stats.pearsonr(PRED, MOS)[0])
    assert rmse(PRED, MOS, fit=False) == pytest.approx(np.sqrt(np.mean((PRED - MOS) ** 2)))


def test_logistic_fit_linearises_a_monotone_relation() -> None:
    x = np.linspace(-3, 3, 40)
    mos = logistic4(x, 90.0, 10.0, 0.5, 0.4)
    assert plcc(x, mos, fit=False) < 0.95
    assert plcc(x, mos) == pytest.approx(1.0, abs=1e-6)
    assert rmse(x, mos) == pytest.approx(0.0, abs=1e-3)
    fitted = fit_logistic(x, mos)
    assert stats.pearsonr(fitted, mos)[0] == pytest.approx(plcc(x, mos))


def test_logistic_fit_follows_a_decreasing_relation() -> None:
    x = np.linspace(0, 1, 30)
    mos = logistic4(-x, 5.0, 1.0, -0.5, 0.1)
    assert srcc(x, mos) == pytest.approx(-1.0)
    assert plcc(x, mos) == pytest.approx(1.0, abs=1e-4)  # the fitted map is decreasing too


def test_failed_logistic_fit_falls_back_to_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", fail)
    slope, intercept = np.polyfit(PRED, MOS, 1)
    np.testing.assert_allclose(fit_logistic(PRED, MOS), slope * PRED + intercept)
    assert plcc(PRED, MOS) == pytest.approx(stats.pearsonr(PRED, MOS)[0])


def test_constant_predictions_give_nan_correlations_not_errors() -> None:
    flat = np.full(6, 3.0)
    mos = np.arange(6.0)
    assert np.isnan(srcc(flat, mos)) and np.isnan(plcc(flat, mos))
    assert rmse(flat, mos) == pytest.approx(np.std(mos))


def test_iqa_metrics_bundle_and_median() -> None:
    m = iqa_metrics(PRED, MOS)
    assert m.n == 8 and m.srcc == pytest.approx(srcc(PRED, MOS)) and m.plcc == pytest.approx(plcc(PRED, MOS))
    assert m.krcc == pytest.approx(krcc(PRED, MOS)) and m.rmse == pytest.approx(rmse(PRED, MOS))
    other = iqa_metrics(PRED[::-1], MOS)
    third = iqa_metrics(PRED**2, MOS)
    med = median_metrics([m, other, third])
    assert med["srcc"] == pytest.approx(np.median([m.srcc, other.srcc, third.srcc]))
    with pytest.raises(ValueError):
        iqa_metrics([1, 2], [1, 2])


def test_plcc_loss_is_half_of_one_minus_pearson() -> None:
    pred, target = torch.tensor(PRED), torch.tensor(MOS)
    expected = (1 - stats.pearsonr(PRED, MOS)[0]) / 2
    assert plcc_loss(pred, target).item() == pytest.approx(expected, abs=1e-6)
    assert plcc_loss(3 * pred + 7, target).item() == pytest.approx(expected, abs=1e-6)  # scale/offset blind
    assert plcc_loss(target * 2, target).item() == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(torch.tensor([1.0]), torch.tensor([2.0])).item() == 0.0


def test_iqa_loss_adds_l1_and_anchors_the_scale() -> None:
    target = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    loss = IQALoss(l1_weight=0.1)
    assert loss(target + 5, target).item() == pytest.approx(0.5, abs=1e-6)  # PLCC term 0, L1 = 5
    pred = torch.tensor([0.3, -0.2, 0.9, 1.1], requires_grad=True)
    loss(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert loss.describe()["name"] == "plcc+l1" and loss.describe()["l1_weight"] == 0.1
