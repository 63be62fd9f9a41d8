"""Seeded 80/20 train/test splits, saved to a JSON file so a run can name ``--split 3``.

The protocol (LoDa's) reports the median over 10 random splits. Splits are drawn over *groups*:
reference images for sets that have them (KADID-10k, synthetic sets), so no content is on both
sides, and single images otherwise. They are drawn from the annotation, before unreadable files
are dropped, so a bad file never shifts the other images between sides. Split ``official``
is the set's own split where it has one (KonIQ-10k's ``set`` column: training / validation /
test). The file records a fingerprint of the groups: a file made for another annotation is
refused rather than silently misapplied.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.atomic import atomic_write
from glia_edge.data.base import IQADataset, cache_root, root_tag
from glia_edge.errors import DatasetError

log = logging.getLogger(__name__)

N_SPLITS = 10
TRAIN_FRACTION = 0.8
SPLIT_SEED = 3407
OFFICIAL = "official"
ALL = "all"
SCHEMA = 1


@dataclass
class SplitFile:
    """Splits of one dataset: ``splits[i]`` maps ``train`` / ``test`` to group names."""

    dataset: str
    by: str  # "ref" or "image"
    seed: int
    train_fraction: float
    fingerprint: str
    splits: list[dict[str, list[str]]]
    official: dict[str, list[str]] | None = None
    schema: int = field(default=SCHEMA)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SplitFile":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def fingerprint(groups: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(groups)).encode()).hexdigest()


def make_splits(groups: list[str], n: int = N_SPLITS, seed: int = SPLIT_SEED,
                train_fraction: float = TRAIN_FRACTION) -> list[dict[str, list[str]]]:
    """``n`` random partitions of ``groups`` into train (``train_fraction``) and test."""
    ordered = sorted(set(groups))
    if len(ordered) < 2:
        raise DatasetError(f"cannot split {len(ordered)} group(s) into train and test")
    n_train = min(len(ordered) - 1, max(1, round(train_fraction * len(ordered))))
    out = []
    for i in range(n):
        perm = np.random.default_rng([seed, i]).permutation(len(ordered))
        out.append({"train": sorted(ordered[j] for j in perm[:n_train]),
                    "test": sorted(ordered[j] for j in perm[n_train:])})
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
                  train_fraction: float = TRAIN_FRACTION) -> SplitFile:
    groups = dataset.groups()
    return SplitFile(dataset=dataset.name, by="ref" if dataset.has_refs else "image", seed=seed,
                     train_fraction=train_fraction, fingerprint=fingerprint(groups),
                     splits=make_splits(groups, n, seed, train_fraction), official=official_split(dataset))


def default_splits_path(dataset: IQADataset) -> Path:
    """Where a dataset's split file lives unless one is named: the cache, keyed by root and annotation."""
    tag = root_tag(Path(dataset.source))
    return cache_root() / "splits" / f"{dataset.name}-{tag}.json"


def read_splits(path: Path) -> SplitFile:
    try:
        return SplitFile.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from exc


def write_splits(splits: SplitFile, path: Path) -> Path:
    atomic_write(Path(path), lambda tmp: tmp.write_text(splits.to_json()))
    return Path(path)


def load_or_create_splits(dataset: IQADataset, path: Path | None = None,
                          seed: int = SPLIT_SEED) -> tuple[SplitFile, Path]:
    """Read the dataset's split file, making and saving it first if it does not exist."""
    path = Path(path) if path else default_splits_path(dataset)
    if path.is_file():
        splits = read_splits(path)
        if splits.fingerprint != fingerprint(dataset.groups()):
            raise DatasetError(f"split file {path} was made for a different annotation of {splits.dataset!r} "
                               "(its image/reference list differs); delete it or name another with --splits-file")
        return splits, path
    splits = create_splits(dataset, seed=seed)
    write_splits(splits, path)
    log.info("wrote %d splits of %s (by %s) to %s", len(splits.splits), dataset.name, splits.by, path)
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
            lo, hi = (int(x) for x in part.split("-", 1))
            out.extend(range(lo, hi + 1))
        elif part:
            out.append(parse_split(part))
    if not out:
        raise DatasetError(f"no splits in {text!r}")
    return out


def split_parts(splits: SplitFile | None, split: int | str) -> dict[str, list[str]]:
    """The group lists of one split (``train``, ``test`` and, for some official splits, ``val``)."""
    if splits is None:
        raise DatasetError("no split file given")
    if split == OFFICIAL:
        if not splits.official:
            raise DatasetError(f"{splits.dataset} has no official split (KonIQ-10k's needs "
                               "koniq10k_distributions_sets.csv with its 'set' column)")
        return splits.official
    if not isinstance(split, int) or not 0 <= split < len(splits.splits):
        raise DatasetError(f"split {split!r} does not exist; the split file has 0-{len(splits.splits) - 1}")
    return splits.splits[split]


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
