"""IQA datasets in their real on-disk formats, looked up by name in one ``DATASETS`` table.

``load_dataset("koniq", root)`` returns an :class:`IQADataset` (records + score scale);
``validate`` drops unreadable files; ``glia_edge.data.splits`` makes the seeded 80/20 splits (with a
validation part carved from each training part; LoDa's own splits via ``glia_edge.data.loda_splits``),
``glia_edge.data.crop_protocol`` fixes the evaluation crops, and
``glia_edge.data.torch_dataset`` turns records into training crops (the only part needing torch).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from glia_edge.data.base import IQADataset, IQARecord, probe_image, validate
from glia_edge.data.csvset import load_csv
from glia_edge.data.kadid import load_kadid
from glia_edge.data.koniq import load_koniq
from glia_edge.data.livec import load_livec
from glia_edge.data.spaq import load_spaq
from glia_edge.data.splits import SplitFile, load_or_create_splits, make_splits, parse_split, select
from glia_edge.errors import DatasetError


@dataclass(frozen=True)
class DatasetSpec:
    """One row of the dataset table."""

    name: str
    loader: Callable[..., IQADataset]
    description: str
    #: Random training crops per image per epoch (LoDa's protocol: 3, and 5 on LIVE Challenge).
    crops_per_image: int = 3
    needs_root: bool = True


DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (
    DatasetSpec("koniq", load_koniq, "KonIQ-10k: 1024x768/ + koniq10k_*.csv"),
    DatasetSpec("livec", load_livec, "LIVE Challenge: Images/ + Data/AllImages_release.mat, AllMOS_release.mat",
                crops_per_image=5),
    DatasetSpec("spaq", load_spaq, "SPAQ: TestImage/ + the MOS .xlsx (resized once into a cache)"),
    DatasetSpec("kadid", load_kadid, "KADID-10k: images/ + dmos.csv (split by reference)"),
    DatasetSpec("csv", load_csv, "any folder + a CSV of path,score[,ref] (or pyiqa/LoDa meta-info)",
                needs_root=False),
)}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def load_dataset(name: str, root: str | Path | None = None, csv: str | Path | None = None,
                 **options: Any) -> IQADataset:
    """Read a dataset's annotation. Options a loader does not take (e.g. ``short_side``) are ignored."""
    spec = dataset_spec(name)
    if spec.needs_root and root is None:
        raise DatasetError(f"dataset {spec.name!r} needs --root DIR ({spec.description})")
    accepted = inspect.signature(spec.loader).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    if csv is not None:
        if "csv" not in accepted:
            raise DatasetError(f"dataset {spec.name!r} reads its own annotation files and takes no --csv")
        kwargs["csv"] = Path(csv)
    return spec.loader(Path(root) if root is not None else None, **kwargs)


__all__ = ["DATASETS", "DatasetSpec", "IQADataset", "IQARecord", "SplitFile", "dataset_spec", "load_dataset",
           "load_or_create_splits", "make_splits", "parse_split", "probe_image", "select", "validate",
           "load_csv", "load_kadid", "load_koniq", "load_livec", "load_spaq"]
