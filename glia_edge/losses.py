"""The training loss: a PLCC-induced term plus a small L1 term, both on standardised scores.

PLCC-induced loss (Li et al., "Norm-in-Norm Loss with Faster Convergence and Better Performance
for Image Quality Assessment", ACM MM 2020): normalise predictions and targets within the batch
to zero mean and unit norm; half the squared distance between them is ``(1 - PLCC) / 2``. It
optimises what the benchmark measures but is blind to offset and scale, so a small L1 term on
the scores standardised by the training set's mean and std anchors the output to the MOS
scale (the model then maps back to MOS with ``set_score_scale``). The choice is recorded in the
checkpoint config via :meth:`IQALoss.describe`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(1 - PLCC(pred, target)) / 2`` over the batch; 0 for batches of fewer than 2."""
    pred, target = pred.reshape(-1).float(), target.reshape(-1).float()
    if pred.numel() < 2:
        return pred.sum() * 0.0
    p = pred - pred.mean()
    t = target - target.mean()
    p = p / (p.norm() + eps)
    t = t / (t.norm() + eps)
    return 0.25 * ((p - t) ** 2).sum()


class IQALoss(nn.Module):
    """``plcc_loss + l1_weight * L1`` on standardised scores (protocol default ``l1_weight=0.1``)."""

    def __init__(self, l1_weight: float = 0.1) -> None:
        super().__init__()
        self.l1_weight = float(l1_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = plcc_loss(pred, target)
        if self.l1_weight:
            loss = loss + self.l1_weight * torch.nn.functional.l1_loss(pred.float(), target.float())
        return loss

    def describe(self) -> dict[str, Any]:
        return {"name": "plcc+l1", "plcc": "norm-in-norm (1 - PLCC)/2 per batch",
                "l1_weight": self.l1_weight, "targets": "standardised by the training split's mean/std"}
