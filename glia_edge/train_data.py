"""The data side of a training run: dataset, split, checks, standardisation, validation scoring.

Training sees only a split's ``train`` and ``val`` parts: the best epoch is chosen on ``val``,
and the ``test`` part is neither loaded nor scored here (only its size is reported), so no test
label can steer a run. The test part is scored afterwards by ``glia-edge eval`` or
``glia-edge reproduce``. Rank 0 reads the dataset first (it may build SPAQ's resized cache and write the split file);
the other ranks follow once it is done, so nothing is built twice or read half-written. The
split file is copied into the run folder, so the run and a later ``glia-edge eval`` name the same
images even if the cache moves.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from glia_edge.data import dataset_spec, load_dataset, validate
from glia_edge.data.base import IQADataset, IQARecord
from glia_edge.data.crop_protocol import CropProtocol, parse_crops
from glia_edge.data.splits import ALL, SplitFile, load_or_create_splits, parse_split, select
from glia_edge.data.torch_dataset import EvalCrops, LadderCrops, TrainCrops, collate_skip_failed
from glia_edge.distributed import DistContext
from glia_edge.errors import DatasetError
from glia_edge.meta import ScoreSpec
from glia_edge.models import GLIA
from glia_edge.preprocess import PreprocessConfig
from glia_edge.train_config import TrainConfig

log = logging.getLogger(__name__)

SPLITS_COPY = "splits.json"


@dataclass
class TrainData:
    """What a run trains and selects on; the test part appears only as a count."""

    dataset: IQADataset
    train: IQADataset
    val: IQADataset
    score: ScoreSpec  # the set's declared scale (else the training part's range) plus the training part's mean/std
    preprocess: PreprocessConfig
    splits_path: Path
    train_set: TrainCrops
    eval_crops: CropProtocol
    sizes: dict[str, int]  # images per part as the split lists them (before unreadable files drop out)
    split_source: str = "glia"
    #: Where ``score.min``/``max`` come from: ``declared`` (the set's scale) or ``train`` (measured
    #: over the training part, for sets that declare none: no validation or test label in it).
    score_range_from: str = "declared"


def limit_records(dataset: IQADataset, limit: int | None, seed: int) -> IQADataset:
    """A seeded random subset of at most ``limit`` records (smoke runs)."""
    if not limit or len(dataset.records) <= limit:
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset.records), limit, replace=False))
    return dataset.with_records(dataset.records[i] for i in keep)


def _load_in_turn(cfg: TrainConfig, ctx: DistContext) -> tuple[IQADataset, SplitFile, Path]:
    """The dataset and its splits; rank 0 first, as it may write caches and the split file."""
    if not ctx.is_main:
        ctx.barrier()
    try:
        dataset = load_dataset(cfg.dataset, cfg.root, cfg.csv, short_side=cfg.short_side, **cfg.dataset_options)
        splits, path = load_or_create_splits(dataset, Path(cfg.splits_file) if cfg.splits_file else None,
                                             source=cfg.split_source)
    finally:
        if ctx.is_main:
            ctx.barrier()
    return dataset, splits, path


def copy_splits(src: Path, out: Path, ctx: DistContext) -> Path:
    """Rank 0 copies the split file into the run folder; every rank gets the copy's path."""
    dst = out / SPLITS_COPY
    if ctx.is_main and src.resolve() != dst.resolve():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return dst


def standardisation(scores: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(scores, dtype=np.float64)
    std = float(arr.std())
    return float(arr.mean()), std if std > 1e-12 else 1.0


def prepare_data(cfg: TrainConfig, ctx: DistContext, crop_size: int) -> TrainData:
    """Load, split, check and standardise the data of a run (train and validation parts only)."""
    if parse_split(cfg.split) == ALL:
        raise DatasetError("training needs a split with held-out parts: pass --split N or --split official")
    # The protocol's own seed (CROP_SEED), not --seed: validation crops are the test protocol's
    # crops, the same for every run (research.md, "Evaluation crops").
    eval_crops = parse_crops(cfg.eval_crops)
    dataset, splits, splits_path = _load_in_turn(cfg, ctx)
    parts = select(dataset, splits, cfg.split)
    sizes = {part: len(parts[part].records) if part in parts else 0 for part in ("train", "val", "test")}
    if not sizes["train"]:
        raise DatasetError(f"split {cfg.split} of {dataset.name} has no training part")
    if not sizes["val"]:
        raise DatasetError(f"split {cfg.split} of {dataset.name} has no validation part to select the best epoch on")
    progress = cfg.progress and ctx.is_main
    train = validate(limit_records(parts["train"], cfg.limit, cfg.seed), progress=progress)
    val = validate(limit_records(parts["val"], cfg.limit, cfg.seed + 1), progress=progress)
    del parts  # the test part stays unread: not validated, not scored
    log.info("split %s of %s (%s splits): %d train / %d val / %d test images", cfg.split, dataset.name,
             cfg.split_source, sizes["train"], sizes["val"], sizes["test"])
    mean, std = standardisation(train.scores())
    crops = cfg.crops_per_image or dataset_spec(cfg.dataset).crops_per_image
    preprocess = PreprocessConfig(short_side=cfg.short_side, crop_size=crop_size)
    options = dict(crops_per_image=crops, seed=cfg.seed, score_mean=mean, score_std=std)
    if cfg.rank_weight or cfg.cross_rank_weight:
        if cfg.dataset != "csv" or not cfg.csv:
            raise DatasetError("--rank-weight trains on ladders of a graded synthetic set: "
                               "use --dataset csv --csv <glia-edge synth labels.csv>")
        ladders = synthetic_ladders(train.records, Path(cfg.csv), cfg.ladder_repeats)
        log.info("ladder ranking: %d ladders of %d levels", len(ladders), len(ladders[0]))
        train_set: TrainCrops = LadderCrops(ladders, preprocess, **options)
    else:
        train_set = TrainCrops(train.records, preprocess, **options)
    # A declared scale is kept; a range the loader only measured (csv sets) is measured again on
    # the training part, so a sigmoid head's bounds hold no validation or test label.
    score = replace(train.score_spec_of(), mean=mean, std=std)
    return TrainData(dataset, train, val, score, preprocess, splits_path, train_set, eval_crops, sizes,
                     cfg.split_source, "declared" if dataset.range_declared else "train")


def synthetic_ladders(records: Sequence[IQARecord], labels_csv: Path,
                      repeats: dict[str, int] | None = None) -> list[list[IQARecord]]:
    """Group the records of a synthetic labels.csv into ladders: for each reference (tile) and
    distortion type, the reference then levels 1..N, best first. Only full-length ladders are kept
    (a level lost to a bad file drops its ladder, with a warning). ``repeats`` (type -> n) lists
    the ladders of a type n times, so a type that is slow to learn gets more of each epoch."""
    from collections import defaultdict

    from glia_edge.ranking import read_ladder_rows

    root = labels_csv.parent
    row_of = {(root / r["path"]).resolve(): r for r in read_ladder_rows(labels_csv)}
    refs: dict[tuple[str, str], IQARecord] = {}
    levels: dict[tuple[str, str, str], dict[int, IQARecord]] = defaultdict(dict)
    for rec in records:
        row = row_of.get(Path(rec.path).resolve())
        if row is None:
            continue
        group = (row["ref"], row.get("part") or "0")
        if row["distortion"] == "none" or int(row["level"]) == 0:
            refs[group] = rec
        else:
            levels[(*group, row["distortion"])][int(row["level"])] = rec
    repeats = repeats or {}
    unknown = set(repeats) - {key[2] for key in levels}
    if unknown:
        raise DatasetError(f"{labels_csv}: ladder repeats name types with no ladders: {', '.join(sorted(unknown))}")
    ladders = [[refs[key[:2]], *(by_level[lv] for lv in sorted(by_level))]
               for key, by_level in sorted(levels.items()) if key[:2] in refs
               for _ in range(repeats.get(key[2], 1))]
    if not ladders:
        raise DatasetError(f"{labels_csv}: no ladders (a reference plus graded levels) among the training images")
    full = max(len(ladder) for ladder in ladders)
    kept = [ladder for ladder in ladders if len(ladder) == full]
    if len(kept) < len(ladders):
        log.warning("%d incomplete ladder(s) left out (a level is missing)", len(ladders) - len(kept))
    return kept


@torch.inference_mode()
def predict_records(model: GLIA, records: Sequence[IQARecord], preprocess: PreprocessConfig,
                    crops: "int | str | CropProtocol", batch_size: int, ctx: DistContext, *, workers: int = 0,
                    progress: bool = False) -> np.ndarray:
    """Mean score over each record's protocol crops (NaN where an image failed), sharded over DDP ranks."""
    from tqdm import tqdm

    data = EvalCrops(records, preprocess, crops=crops)
    sampler = DistributedSampler(data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False) \
        if ctx.enabled else None
    loader = DataLoader(data, batch_size=max(1, batch_size // data.protocol.count), sampler=sampler,
                        num_workers=workers, collate_fn=collate_skip_failed)
    ids: list[int] = []
    preds: list[float] = []
    for batch in tqdm(loader, desc="evaluating", unit="batch", leave=False, disable=not (progress and ctx.is_main)):
        if batch is None:
            continue
        x, _, idx = batch
        b, n = x.shape[:2]
        out = model(x.flatten(0, 1).to(ctx.device)).float().view(b, n).mean(dim=1)
        ids += idx.tolist()
        preds += out.cpu().tolist()
    result = np.full(len(records), np.nan)
    for rank_ids, rank_preds in ctx.gather((ids, preds)):
        result[rank_ids] = rank_preds
    return result
