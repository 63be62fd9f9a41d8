"""LoDa's ten train/test splits, regenerated the way LoDa's preprocessing scripts draw them.

LoDa (Xu et al., CVPR 2024) publishes its splits only as pickled index lists on a cloud drive.
Unpickling a downloaded file can run arbitrary code, and the drive is out of reach here anyway,
so the splits are drawn again by LoDa's documented procedure instead of being imported:

- the standard-library ``random`` is seeded once with 3407;
- by image (KonIQ-10k, LIVE Challenge, SPAQ): the list ``[0, 1, ..., N-1]`` of row indices of the
  annotation is shuffled in place once per split, *cumulatively* (split i shuffles the order that
  split i-1 left), and its first ``round(0.8 N)`` entries train, the rest test;
- by reference (KADID-10k): the sorted list of reference names is shuffled the same way and the
  first ``round(0.8 R)`` references train (every distorted image of a reference goes with it).

Indices point at rows of LoDa's meta-info files, which keep each release's own row order:
KonIQ-10k's ``koniq10k_scores_and_distributions.csv``, LIVE Challenge's ``AllImages_release.mat``
without its first 7 entries, SPAQ's MOS sheet, KADID-10k's ``dmos.csv``. The published split
sizes (train / test) are KonIQ-10k 8,058 / 2,015, LIVE Challenge 930 / 232, SPAQ 8,900 / 2,225,
and KADID-10k 65 / 16 references (8,125 / 2,000 images; LoDa's config lists 8,100 / 2,025, a
nominal 80/20 used only for its learning-rate schedule). LoDa's splits have no validation part:
:func:`glia_edge.data.splits.split_parts` carves one from each training part, so the test parts
stay LoDa's.
"""
from __future__ import annotations

import random
from pathlib import Path

from glia_edge.data.base import IQADataset, read_table
from glia_edge.errors import DatasetError

LODA_SEED = 3407
LODA_SPLITS = 10
LODA_TRAIN_RATIO = 0.8
#: Images (or KADID-10k references) per set in LoDa's meta-info files, as its configs state them.
LODA_COUNTS = {"koniq": 10073, "livec": 1162, "spaq": 11125, "kadid": 81}


def loda_index_splits(n: int, seed: int = LODA_SEED, n_splits: int = LODA_SPLITS) -> list[dict[str, list[int]]]:
    """LoDa's by-image splits of ``n`` annotation rows: lists of row indices per split."""
    rng = random.Random(seed)
    order = list(range(n))
    n_train = int(round(LODA_TRAIN_RATIO * n))
    out = []
    for _ in range(n_splits):
        rng.shuffle(order)  # cumulative: each split reshuffles the previous order, as LoDa's loop does
        out.append({"train": list(order[:n_train]), "test": list(order[n_train:])})
    return out


def loda_reference_splits(refs: list[str], seed: int = LODA_SEED,
                          n_splits: int = LODA_SPLITS) -> list[dict[str, list[str]]]:
    """LoDa's by-reference splits (KADID-10k): reference names per split."""
    rng = random.Random(seed)
    order = sorted(set(refs))
    n_train = int(round(LODA_TRAIN_RATIO * len(order)))
    out = []
    for _ in range(n_splits):
        rng.shuffle(order)
        out.append({"train": sorted(order[:n_train]), "test": sorted(order[n_train:])})
    return out


def _koniq_row_order(dataset: IQADataset) -> list[str]:
    """KonIQ-10k image names in the order of the download's scores CSV, which LoDa's rows follow."""
    from glia_edge.data.koniq import SCORES_CSV

    source = Path(dataset.source)
    if source.name == SCORES_CSV:
        return [r.key for r in dataset.records]
    scores = dataset.root / SCORES_CSV
    if not scores.is_file():
        raise DatasetError(f"LoDa's KonIQ-10k splits index the rows of {SCORES_CSV}; put it in {dataset.root} "
                           "(or load the set from it with --csv)")
    return [str(name).strip() for name in read_table(scores)["image_name"]]


def loda_splits(dataset: IQADataset) -> list[dict[str, list[str]]]:
    """LoDa's ten splits of ``dataset`` as group names (image keys, or KADID-10k references)."""
    if dataset.has_refs:
        refs = {r.ref for r in dataset.records if r.ref is not None}
        if dataset.name == "kadid" and len(refs) != LODA_COUNTS["kadid"]:
            raise DatasetError(f"LoDa's KADID-10k splits draw from 81 references; this annotation has {len(refs)}")
        return loda_reference_splits(sorted(refs))
    keys = _koniq_row_order(dataset) if dataset.name == "koniq" else [r.key for r in dataset.records]
    known = {r.key for r in dataset.records}
    if set(keys) != known:
        raise DatasetError(f"{dataset.name}: the row list LoDa's splits index does not match the annotation "
                           f"({len(set(keys) ^ known)} image(s) differ)")
    expected = LODA_COUNTS.get(dataset.name)
    if expected is not None and len(keys) != expected:
        raise DatasetError(f"LoDa's {dataset.name} splits index {expected} rows; this annotation has {len(keys)}")
    return [{part: sorted(keys[i] for i in idx) for part, idx in split.items()}
            for split in loda_index_splits(len(keys))]
