"""The settings of a training run, in their own module so the training loop (``glia_edge.train``)
and its data side (``glia_edge.train_data``) both import them without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glia_edge.data.crop_protocol import DEFAULT_EVAL_CROPS


@dataclass
class TrainConfig:
    """Every setting of a run; saved in the checkpoint so it can be repeated."""

    dataset: str
    root: str | None = None
    csv: str | None = None
    preset: str = "glia_vit_small"
    backbone_weights: str = "pretrained"  # path, timm name, "pretrained" (the preset's tag) or "none"
    #: The frozen ResNet-50 local stream's weights (presets with one): path, timm name, "pretrained"
    #: (the preset's timm tag). Training refuses a random frozen local stream.
    local_weights: str = "pretrained"
    split: int | str = 0
    splits_file: str | None = None
    split_source: str = "glia"  # "glia" (this project's seeded splits) or "loda" (LoDa's, regenerated)
    output: str | None = None
    epochs: int = 10
    batch_size: int = 128  # global: divided between DDP processes
    lr: float = 3e-4
    weight_decay: float = 1e-2
    crops_per_image: int | None = None  # None: the dataset's protocol value (3; 5 on LIVE Challenge)
    eval_crops: str = DEFAULT_EVAL_CROPS  # validation crops: "random15" (LoDa's), "grid1", "grid5", "grid9"
    l1_weight: float = 0.1
    rank_weight: float = 0.0  # > 0: ladder ranking loss on a graded synthetic set (see losses.py)
    cross_rank_weight: float = 0.0  # > 0: ranking across ladders (other photos), margin from the label gap
    #: Ladders of these distortion types are served this many times per epoch (types slow to learn).
    ladder_repeats: dict[str, int] = field(default_factory=dict)
    seed: int = 3407
    device: str = "auto"
    workers: int = 4
    amp: bool = False  # bfloat16 autocast on CUDA
    resume: str | None = None
    max_steps: int | None = None
    limit: int | None = None
    short_side: int = 384
    model_overrides: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    #: Replace a run already in ``output`` (without it such a folder is refused). Its files are
    #: removed only when this run commits its first epoch: a run that fails before leaves it intact.
    overwrite: bool = False


def parse_ladder_repeat(text: str) -> tuple[str, int]:
    """One ``TYPE=N`` of ``ladder_repeats`` (CLI ``--ladder-repeat``): a distortion type and a count >= 1."""
    name, _, count = text.partition("=")
    if not name or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{text!r}: expected TYPE=N (a distortion type of the set and a count >= 1)")
    return name, int(count)


__all__ = ["TrainConfig", "parse_ladder_repeat"]
