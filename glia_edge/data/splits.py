"""Seeded 80/20 train/test splits with a validation part, saved to JSON so a run can name ``--split 3``.

The protocol (LoDa's) reports the median over 10 random splits. Every random split also carries a
validation part carved, seeded, from its training part (:data:`VAL_FRACTION` of the training
groups): training chooses its ``best`` epoch there and never reads the test part, which is scored
once, after training. Splits are drawn over *groups*:
reference images for sets that have them (KADID-10k, synthetic sets), so no content is on both
sides, and single images otherwise. They are drawn from the annotation, before unreadable files
are dropped, so a bad file never shifts the other images between sides. Split ``official``
is the set's own split where it has one (KonIQ-10k's ``set`` column: training / validation /
test). The file records a fingerprint of the groups: a file made for another annotation is
refused rather than silently misapplied. A split without a validation part (an official split
that has none, LoDa's regenerated splits, files written before validation parts existed) gets
one carved from its training part by the same rule when it is selected, so its test part never
changes. ``source="loda"`` gives LoDa's own ten splits instead (see :mod:`glia_edge.data.loda_splits`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glia_edge.atomic import atomic_write
from glia_edge.data.base import IQADataset, cache_root, root_tag
from glia_edge.errors import DatasetError

log = logging.getLogger(__name__)

N_SPLITS = 10
TRAIN_FRACTION = 0.8
#: Share of a split's training groups carved off as its validation part (at least one group).
VAL_FRACTION = 0.1
SPLIT_SEED = 3407
OFFICIAL = "official"
ALL = "all"
SCHEMA = 2
#: The split index that seeds the validation part carved from an official split without one.
#: Non-negative (numpy seeds must be) and above any numbered split, so no numbered split's
#: draw (``[seed, i, 1]``) is ever shared or changed.
OFFICIAL_INDEX = 2**31
#: Where splits come from: this project's seeded draw, or LoDa's regenerated ones.
SOURCES = ("glia", "loda")


@dataclass
class SplitFile:
    """Splits of one dataset: ``splits[i]`` maps ``train`` / ``val`` / ``test`` to group names."""

    dataset: str
    by: str  # "ref" or "image"
    seed: int
    train_fraction: float
    fingerprint: str
    splits: list[dict[str, list[str]]]
    official: dict[str, list[str]] | None = None
    schema: int = field(default=SCHEMA)
    source: str = "glia"  # "glia" (this project's draw) or "loda" (LoDa's, regenerated)
    val_fraction: float = VAL_FRACTION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SplitFile":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def fingerprint(groups: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(groups)).encode()).hexdigest()


def carve_validation(train: list[str], seed: int, index: int,
                     fraction: float = VAL_FRACTION) -> tuple[list[str], list[str]]:
    """Split a training part's groups into (train, val): a seeded ``fraction`` of them, at least one,
    goes to validation. Depends only on the group names, the seed and the split index."""
    ordered = sorted(set(train))
    if len(ordered) < 2:
        raise DatasetError(f"cannot carve a validation part from {len(ordered)} training group(s)")
    n_val = min(len(ordered) - 1, max(1, int(np.floor(fraction * len(ordered) + 0.5))))
    perm = np.random.default_rng([seed, index, 1]).permutation(len(ordered))
    return sorted(ordered[j] for j in perm[n_val:]), sorted(ordered[j] for j in perm[:n_val])


def make_splits(groups: list[str], n: int = N_SPLITS, seed: int = SPLIT_SEED,
                train_fraction: float = TRAIN_FRACTION,
                val_fraction: float = VAL_FRACTION) -> list[dict[str, list[str]]]:
    """``n`` random partitions of ``groups`` into train+val (``train_fraction``) and test; the
    validation part is then carved from the training part (:func:`carve_validation`)."""
    ordered = sorted(set(groups))
    if len(ordered) < 3:
        raise DatasetError(f"cannot split {len(ordered)} group(s) into train, validation and test")
    n_train = min(len(ordered) - 1, max(2, round(train_fraction * len(ordered))))
    out = []
    for i in range(n):
        perm = np.random.default_rng([seed, i]).permutation(len(ordered))
        train, val = carve_validation([ordered[j] for j in perm[:n_train]], seed, i, val_fraction)
        out.append({"train": train, "val": val, "test": sorted(ordered[j] for j in perm[n_train:])})
    return out


def official_split(dataset: IQADataset) -> dict[str, list[str]] | None:
    if not dataset.has_official_split:
        return None
    parts: dict[str, list[str]] = {}
    for rec in dataset.records:
        if rec.subset is not None:
            parts.setdefault(rec.subset, []).append(rec.group)
    return {k: sorted(set(v)) for k, v in sorted(parts.items())}


def create_splits(dataset: IQADataset, n: int = N_SPLITS, seed: int = SPLIT_SEED,
                  train_fraction: float = TRAIN_FRACTION, source: str = "glia") -> SplitFile:
    """The dataset's split file: this project's seeded draw, or (``source="loda"``) LoDa's splits."""
    if source not in SOURCES:
        raise DatasetError(f"split source must be one of {SOURCES}, got {source!r}")
    groups = dataset.groups()
    if source == "loda":
        from glia_edge.data.loda_splits import loda_splits

        drawn, seed = loda_splits(dataset), 3407
    else:
        drawn = make_splits(groups, n, seed, train_fraction)
    return SplitFile(dataset=dataset.name, by="ref" if dataset.has_refs else "image", seed=seed,
                     train_fraction=train_fraction, fingerprint=fingerprint(groups),
                     splits=drawn, official=official_split(dataset), source=source)


def default_splits_path(dataset: IQADataset, source: str = "glia") -> Path:
    """Where a dataset's split file lives unless one is named: the cache, keyed by root and annotation."""
    tag = root_tag(Path(dataset.source))
    suffix = "" if source == "glia" else f"-{source}"
    return cache_root() / "splits" / f"{dataset.name}-{tag}{suffix}.json"


def read_splits(path: Path) -> SplitFile:
    try:
        return SplitFile.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from exc


def write_splits(splits: SplitFile, path: Path) -> Path:
    atomic_write(Path(path), lambda tmp: tmp.write_text(splits.to_json()))
    return Path(path)


def load_or_create_splits(dataset: IQADataset, path: Path | None = None, seed: int = SPLIT_SEED,
                          source: str = "glia", create: bool = True) -> tuple[SplitFile, Path]:
    """Read the dataset's split file, making and saving it first if it does not exist.

    ``create=False`` (evaluation naming a file): a missing file is an error, not a new draw that
    would silently stand in for the splits a run was trained on.
    """
    path = Path(path) if path else default_splits_path(dataset, source)
    if not create and not path.is_file():
        raise DatasetError(f"split file not found: {path}" if not path.exists() else f"split file {path} is not a file")
    if path.is_file():
        splits = read_splits(path)
        if splits.fingerprint != fingerprint(dataset.groups()):
            raise DatasetError(f"split file {path} was made for a different annotation of {splits.dataset!r} "
                               "(its image/reference list differs); delete it or name another with --splits-file")
        return splits, path
    splits = create_splits(dataset, seed=seed, source=source)
    write_splits(splits, path)
    log.info("wrote %d %s splits of %s (by %s) to %s", len(splits.splits), source, dataset.name, splits.by, path)
    return splits, path


def parse_split(text: str | int) -> int | str:
    """``3`` -> 3; ``official`` and ``all`` stay names."""
    value = str(text).strip().lower()
    if value in (OFFICIAL, ALL):
        return value
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"split must be a number, {OFFICIAL!r} or {ALL!r}, got {text!r}") from None


def parse_split_range(text: str) -> list[int | str]:
    """``0-9`` -> [0..9]; ``0,2,5`` and ``official`` also work."""
    out: list[int | str] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            try:
                lo, hi = (int(x) for x in part.split("-", 1))
            except ValueError:
                raise DatasetError(f"split range must look like 0-9, got {part!r} in {text!r}") from None
            if lo > hi:
                raise DatasetError(f"split range {part!r} runs backwards (write {hi}-{lo})")
            out.extend(range(lo, hi + 1))
        elif part:
            out.append(parse_split(part))
    if not out:
        raise DatasetError(f"no splits in {text!r}")
    return out


def check_split_numbers(splits: Sequence[int | str], available: int = N_SPLITS) -> None:
    """Numbered splits must exist (0 to ``available - 1``): checked before anything is trained or
    scored, so a typo in ``--splits 0-99`` fails at once, not after the valid splits ran."""
    for split in splits:
        if isinstance(split, int) and not 0 <= split < available:
            raise DatasetError(f"split {split} does not exist: the splits are 0-{available - 1}")


def split_parts(splits: SplitFile | None, split: int | str) -> dict[str, list[str]]:
    """The group lists of one split: ``train``, ``val`` and ``test``.

    A split stored without a validation part gets one carved from its training part here (seeded
    by the file's seed and the split's index; ``official`` counts as :data:`OFFICIAL_INDEX`).
    """
    if splits is None:
        raise DatasetError("no split file given")
    if split == OFFICIAL:
        if not splits.official:
            raise DatasetError(f"{splits.dataset} has no official split (KonIQ-10k's needs "
                               "koniq10k_distributions_sets.csv with its 'set' column)")
        parts, index = dict(splits.official), OFFICIAL_INDEX
    elif not isinstance(split, int) or not 0 <= split < len(splits.splits):
        raise DatasetError(f"split {split!r} does not exist; the split file has 0-{len(splits.splits) - 1}")
    else:
        parts, index = dict(splits.splits[split]), split
    if not parts.get("val") and parts.get("train"):
        parts["train"], parts["val"] = carve_validation(parts["train"], splits.seed, index, splits.val_fraction)
    return parts


def select(dataset: IQADataset, splits: SplitFile | None, split: int | str) -> dict[str, IQADataset]:
    """The dataset cut into its split's parts: ``{"train": ..., "test": ..., ["val": ...]}``.

    ``split="all"`` puts every record in ``test`` (evaluating on a set not trained on).
    """
    split = parse_split(split)
    if split == ALL:
        return {"test": dataset}
    parts = split_parts(splits, split)
    out = {}
    for part, groups in parts.items():
        members = set(groups)
        out[part] = dataset.with_records(r for r in dataset.records if r.group in members)
    return out
