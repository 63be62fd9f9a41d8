"""The training loss: a PLCC-induced term plus a small L1 term, both on standardised scores.

PLCC-induced loss (Li et al., "Norm-in-Norm Loss with Faster Convergence and Better Performance
for Image Quality Assessment", ACM MM 2020): normalise predictions and targets within the batch
to zero mean and unit norm; their squared distance is then ``2 - 2 PLCC``, so a quarter of it is
``(1 - PLCC) / 2``, which is what :func:`plcc_loss` returns. It
optimises what the benchmark measures but is blind to offset and scale, so a small L1 term on
the scores standardised by the training set's mean and std anchors the output to the MOS
scale (the model then maps back to MOS with ``set_score_scale``). The choice is recorded in the
checkpoint config via :meth:`IQALoss.describe`.

On graded synthetic sets a third term can be added: a pairwise margin ranking loss inside each
*ladder* (one crop of one reference at every level of one distortion type, see
:class:`glia_edge.data.torch_dataset.LadderCrops`), as in RankIQA (Liu et al., ICCV 2017). Only
the distortion differs inside a ladder, so the model is pushed to score the distortion, not the
content, which batch-level PLCC over mixed photos cannot separate.

Ranking inside ladders alone leaves each photo its own offset: a level means different scores on
different content. :func:`cross_rank_loss` ranks pairs drawn from *different* ladders of a batch
(other photos, other types) with a margin that grows with their label gap, so a level-2 image of
one photo must score below a level-1 image of another by about a level's worth.
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


def ladder_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Mean pairwise hinge ``relu(margin - (p_i - p_j))`` over pairs of one ladder with ``t_i > t_j``.

    ``pred`` and ``target`` are (ladders, levels); pairs never cross ladders. 0 when no pair is ordered.
    """
    pred, target = pred.float(), target.float()
    better = target.unsqueeze(2) > target.unsqueeze(1)  # (G, L, L): i ranks above j
    gaps = torch.relu(margin - (pred.unsqueeze(2) - pred.unsqueeze(1)))
    return (gaps * better).sum() / better.sum().clamp(min=1)


def cross_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin_scale: float = 0.5) -> torch.Tensor:
    """Mean hinge ``relu(margin_scale * (t_i - t_j) - (p_i - p_j))`` over pairs from *different* ladders
    with ``t_i > t_j``: the margin grows with the label gap. ``pred``/``target`` are (ladders, levels)."""
    pred, target = pred.float(), target.float()
    ladder = torch.arange(pred.shape[0], device=pred.device).repeat_interleave(pred.shape[1])
    p, t = pred.reshape(-1), target.reshape(-1)
    gap = t.unsqueeze(1) - t.unsqueeze(0)  # (N, N): how far i ranks above j
    pairs = (gap > 0) & (ladder.unsqueeze(1) != ladder.unsqueeze(0))
    hinge = torch.relu(margin_scale * gap - (p.unsqueeze(1) - p.unsqueeze(0)))
    return (hinge * pairs).sum() / pairs.sum().clamp(min=1)


class IQALoss(nn.Module):
    """``plcc_loss + l1_weight * L1`` on standardised scores (protocol default ``l1_weight=0.1``),
    plus, when the batch comes as ladders (G, L), ``rank_weight * ladder_rank_loss`` and
    ``cross_weight * cross_rank_loss``."""

    def __init__(self, l1_weight: float = 0.1, rank_weight: float = 0.0, rank_margin: float = 0.2,
                 cross_weight: float = 0.0, cross_margin_scale: float = 0.5) -> None:
        super().__init__()
        self.l1_weight, self.rank_weight, self.rank_margin = float(l1_weight), float(rank_weight), float(rank_margin)
        self.cross_weight, self.cross_margin_scale = float(cross_weight), float(cross_margin_scale)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = plcc_loss(pred, target)
        if self.l1_weight:
            loss = loss + self.l1_weight * torch.nn.functional.l1_loss(pred.float(), target.float())
        if self.rank_weight and pred.dim() == 2:
            loss = loss + self.rank_weight * ladder_rank_loss(pred, target, self.rank_margin)
        if self.cross_weight and pred.dim() == 2:
            loss = loss + self.cross_weight * cross_rank_loss(pred, target, self.cross_margin_scale)
        return loss

    def describe(self) -> dict[str, Any]:
        desc: dict[str, Any] = {"name": "plcc+l1", "plcc": "norm-in-norm (1 - PLCC)/2 per batch",
                                "l1_weight": self.l1_weight, "targets": "standardised by the training split's mean/std"}
        if self.rank_weight:
            desc.update(name="plcc+l1+ladder-rank", rank_weight=self.rank_weight, rank_margin=self.rank_margin,
                        rank="pairwise hinge inside each (reference crop, distortion type) ladder of levels")
        if self.cross_weight:
            desc.update(name=desc["name"] + "+cross-rank", cross_weight=self.cross_weight,
                        cross_margin_scale=self.cross_margin_scale,
                        cross_rank="pairwise hinge across ladders, margin = scale x label gap (standardised)")
        return desc
