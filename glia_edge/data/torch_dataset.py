"""PyTorch views of an IQA record list: random training crops and the deterministic eval grid.

Both build on the one preprocessing definition (:mod:`glia_edge.preprocess`): decode with EXIF
orientation, resize the short side, then ``random_crop`` (training: a random crop with random
horizontal and vertical flips) or the evaluation-crop protocol
(:mod:`glia_edge.data.crop_protocol`: the crop grid or LoDa's seeded random crops). Training shows every image
``crops_per_image`` times per epoch as separate samples (LoDa's protocol). The random stream of a
sample depends only on (seed, epoch, index), so results do not change with the number of loader
workers or processes. An image that fails to decode yields ``None``; :func:`collate_skip_failed`
drops it, so one bad file costs one sample, not the run.

:class:`LadderCrops` serves graded synthetic sets: each item is one random crop position (and
flip) applied to every level of one reference and distortion type, for the ladder ranking loss.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from glia_edge.data.base import IQARecord
from glia_edge.data.crop_protocol import CropProtocol, parse_crops
from glia_edge.errors import ImageLoadError
from glia_edge.preprocess import PreprocessConfig, load_resized, random_crop

log = logging.getLogger(__name__)


class TrainCrops(Dataset):
    """``crops_per_image`` random crops (with h/v flips) per record per epoch.

    Items are ``(crop float32 (3, S, S), standardised score, record index)`` or ``None``.
    Call :meth:`set_epoch` before each epoch for fresh crops.
    """

    def __init__(self, records: Sequence[IQARecord], cfg: PreprocessConfig, *, crops_per_image: int = 3,
                 seed: int = 0, score_mean: float = 0.0, score_std: float = 1.0) -> None:
        if crops_per_image < 1:
            raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
        self.records, self.cfg = list(records), cfg
        self.crops_per_image, self.seed = crops_per_image, seed
        self.score_mean, self.score_std = float(score_mean), float(score_std)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records) * self.crops_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        i = index // self.crops_per_image
        rec = self.records[i]
        try:
            img = load_resized(rec.path, self.cfg)
        except ImageLoadError as exc:
            log.warning("skipping %s: %s", rec.path, exc.reason)
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index])
        crop = random_crop(img, self.cfg, rng)
        target = (rec.score - self.score_mean) / self.score_std
        return torch.from_numpy(crop), torch.tensor(target, dtype=torch.float32), i


class LadderCrops(TrainCrops):
    """``crops_per_image`` ladders per (reference, distortion type) per epoch: the same random crop
    and flips cut from each level's image, best level first.

    Items are ``(crops float32 (L, 3, S, S), standardised scores (L,), ladder index)`` or ``None``
    when any image of the ladder fails to load. Every ladder must have the same length L.
    """

    def __init__(self, ladders: Sequence[Sequence[IQARecord]], cfg: PreprocessConfig, **kwargs: Any) -> None:
        lengths = {len(ladder) for ladder in ladders}
        if len(lengths) != 1 or min(lengths) < 2:
            raise ValueError(f"ladders need one common length of at least 2, got {sorted(lengths)}")
        super().__init__([ladder[0] for ladder in ladders], cfg, **kwargs)
        self.ladders = [list(ladder) for ladder in ladders]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        i = index // self.crops_per_image
        try:
            images = [load_resized(rec.path, self.cfg)
                      for rec in self.ladders[i]]
        except ImageLoadError as exc:
            log.warning("skipping a ladder of %s: %s", self.ladders[i][0].path, exc)
            return None
        if len({img.size for img in images}) != 1:
            log.warning("skipping a ladder of %s: its levels differ in size", self.ladders[i][0].path)
            return None
        # One seed for every level: identical crop box and flips, so only the distortion differs.
        crops = [random_crop(img, self.cfg, np.random.default_rng([self.seed, self.epoch, index])) for img in images]
        targets = [(rec.score - self.score_mean) / self.score_std for rec in self.ladders[i]]
        return torch.from_numpy(np.stack(crops)), torch.tensor(targets, dtype=torch.float32), i


class EvalCrops(Dataset):
    """Each record's evaluation crops under a crop protocol (``grid1/5/9`` or ``randomN``, seeded).

    Items are ``(crops float32 (n, 3, S, S), score on the dataset scale, record index)`` or ``None``.
    """

    def __init__(self, records: Sequence[IQARecord], cfg: PreprocessConfig, *,
                 crops: "int | str | CropProtocol" = 1) -> None:
        self.records, self.cfg, self.protocol = list(records), cfg, parse_crops(crops)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        rec = self.records[index]
        try:
            img = load_resized(rec.path, self.cfg)
        except ImageLoadError as exc:
            log.warning("skipping %s: %s", rec.path, exc.reason)
            return None
        crops = self.protocol.crops(img, self.cfg, rec.key)
        return torch.from_numpy(crops), torch.tensor(rec.score, dtype=torch.float64), index


def collate_skip_failed(batch: list[Any]) -> Any:
    """``default_collate`` over the items that loaded; ``None`` when none did."""
    good = [item for item in batch if item is not None]
    return default_collate(good) if good else None
