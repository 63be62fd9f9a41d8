"""The evaluation-crop protocol: which crops of an image are scored, and how they are chosen.

Scores of an image are the mean over its crops. Two kinds exist, both cut by the one
preprocessing definition (:mod:`glia_edge.preprocess`), never by a side path:

- ``gridN`` (N = 1, 5 or 9): the deterministic crop grid, ``preprocess.crops_from_image``;
- ``randomN`` (any N >= 1): N crop boxes drawn uniformly over the resized image, as LoDa's test
  transform (``RandomCrop(224)``, no flips) does, with ``preprocess.random_crop`` and flips off.
  The draw is seeded by the protocol seed and the image's annotation key, so an image gets the
  same crops whatever the batch, order, backend or machine.

The default, :data:`DEFAULT_EVAL_CROPS`, is LoDa's: 15 random crops (its ``test.patch_num``).
Training scores its validation part with the same protocol. ``1``, ``5`` and ``9`` on their own
mean the grid, as the older ``--crops`` option did.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from glia_edge.errors import DatasetError
from glia_edge.preprocess import CROP_COUNTS, PreprocessConfig, crops_from_image, prepare, random_crop

CROP_SEED = 3407
_PATTERN = re.compile(r"^(grid|random)?(\d+)$")


@dataclass(frozen=True)
class CropProtocol:
    """``kind`` ("grid" or "random"), ``count`` crops, and the seed of a random draw."""

    kind: str
    count: int
    seed: int = CROP_SEED

    def __post_init__(self) -> None:
        if self.kind not in ("grid", "random"):
            raise DatasetError(f"crop protocol kind must be grid or random, got {self.kind!r}")
        if self.kind == "grid" and self.count not in CROP_COUNTS:
            raise DatasetError(f"a crop grid has {', '.join(map(str, CROP_COUNTS))} crops, not {self.count}")
        if self.count < 1:
            raise DatasetError(f"need at least one crop, got {self.count}")

    @property
    def name(self) -> str:
        return f"{self.kind}{self.count}"

    def describe(self) -> str:
        if self.kind == "grid":
            return {1: "centre crop", 5: "4 corners + centre", 9: "3x3 grid"}[self.count]
        return f"{self.count} random crops (uniform boxes, no flips, seed {self.seed} + image key)"

    def crops(self, img: Image.Image, cfg: PreprocessConfig, key: str) -> np.ndarray:
        """The protocol's crops of a decoded image: float32 (count, 3, S, S) in [0, 1]."""
        if self.kind == "grid":
            return crops_from_image(img, cfg, self.count)
        resized = prepare(img, cfg)
        rng = np.random.default_rng([self.seed, key_seed(key)])
        return np.stack([random_crop(resized, cfg, rng, hflip=False, vflip=False) for _ in range(self.count)])


def key_seed(key: str) -> int:
    """A stable 64-bit number from an image key (Python's ``hash`` changes per process)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def parse_crops(spec: "str | int | CropProtocol", seed: int = CROP_SEED) -> CropProtocol:
    """``random15`` / ``grid5`` / ``9`` (a bare count is the grid) -> :class:`CropProtocol`."""
    if isinstance(spec, CropProtocol):
        return spec
    match = _PATTERN.match(str(spec).strip().lower())
    if not match:
        raise DatasetError(f"crops must look like random15, grid5 or 9, got {spec!r}")
    kind, count = match.group(1) or "grid", int(match.group(2))
    return CropProtocol(kind, count, seed)


#: LoDa's test protocol: 15 random 224 crops per image, scores averaged.
DEFAULT_EVAL_CROPS = "random15"

__all__ = ["CROP_SEED", "CropProtocol", "DEFAULT_EVAL_CROPS", "key_seed", "parse_crops"]
