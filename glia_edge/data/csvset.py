"""Any folder of images plus a CSV of ``path,score``: the generic set, and meta-info CSVs.

Columns are matched case-insensitively:

- image: ``path`` (or pyiqa/LoDa's ``dist_name`` / ``img_name``, or ``image_name``, ``image``,
  ``filename``), relative to ``root`` when given, else to the CSV's own folder;
- score: ``score`` (or ``mos``, ``dmos``, ``quality``);
- optional ``ref`` (or ``ref_name``, ``ref_img``, ``reference``): splits then keep each
  reference's images together (synthetic sets);
- optional ``set`` / ``split`` with training / validation / test values: the official split.

The synthetic-distortion generator's ``labels.csv`` (``path,score,ref,distortion,level``,
paths relative to the CSV) loads as is. Windows paths (``img\\a0.png``) are read with ``/`` when
the path does not exist as written. An image listed more than once (also when spelled two ways:
``img/a.png`` and ``./img/a.png`` are one key) is kept once, with the mean of its scores (one warning): a duplicate would otherwise train on conflicting labels and count
twice in a test part. The score range is taken from the data unless given, and then marked
measured (``IQADataset.range_declared`` False: a model's range comes from its training part);
scores count as higher-is-better unless told otherwise (pyiqa's LIVE/CSIQ ``dmos`` is not).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from glia_edge.data.base import (SUBSET_NAMES, IQADataset, IQARecord, check_not_empty, finite_rows, image_key,
                                 merge_duplicates, read_table, require_file)
from glia_edge.errors import DatasetError
from glia_edge.meta import ScoreSpec

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "dist_name", "img_name", "image_name", "image", "filename", "file")
SCORE_COLUMNS = ("score", "mos", "dmos", "quality")
REF_COLUMNS = ("ref", "ref_name", "ref_img", "reference")
SUBSET_COLUMNS = ("set", "split")
DEFAULT_CSV = "labels.csv"


def find_column(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The first of ``wanted`` present in ``columns`` (case-insensitive), as spelled in the file."""
    lower = {str(c).strip().lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def _csv_path(root: Path | None, csv: Path | None) -> Path:
    if csv is not None:
        return require_file([Path(csv)], "annotation CSV")
    if root is None:
        raise DatasetError("the csv dataset needs --csv FILE (or --root DIR holding labels.csv)")
    found = sorted(Path(root).glob("*.csv"))
    if (Path(root) / DEFAULT_CSV).is_file():
        return Path(root) / DEFAULT_CSV
    if len(found) == 1:
        return found[0]
    if not found:
        raise DatasetError(f"{root}: no {DEFAULT_CSV} (or other CSV annotation) here; pass --csv FILE")
    raise DatasetError(f"cannot tell which CSV in {root} to use ({len(found)} found); pass --csv FILE")


def _base_dir(names: list[str], root: Path | None, csv_dir: Path) -> Path:
    """Image paths are relative to ``root`` when given; fall back to the CSV's folder if they fit better."""
    if root is None:
        return csv_dir
    sample = names[:20]
    hits = {base: sum((base / n).exists() or (base / _slashed(n)).exists() for n in sample)
            for base in (Path(root), csv_dir)}
    if hits[csv_dir] > hits[Path(root)]:
        log.info("image paths in the CSV are relative to its folder %s, not to %s", csv_dir, root)
        return csv_dir
    return Path(root)


def _slashed(name: str) -> str:
    return name.replace("\\", "/")


def _normalise_names(names: list[str], base: Path, source: Path) -> list[str]:
    """Windows separators to ``/``, only for a name that does not exist as written (on POSIX a
    backslash is a legal file-name character)."""
    out = [_slashed(n) if "\\" in n and not (base / n).exists() else n for n in names]
    changed = sum(a != b for a, b in zip(names, out))
    if changed:
        log.info("%s: %d path(s) with Windows separators read with '/'", source, changed)
    return out


def _subset(value: Any) -> str | None:
    return SUBSET_NAMES.get(str(value).strip().lower()) if value is not None else None


def _ref(value: Any) -> str | None:
    """A reference name, normalised like image keys (a split group spelled two ways is one group)."""
    text = str(value).strip() if value is not None else ""
    return None if text.lower() in ("", "nan", "none") else image_key(text)


def _key(name: str, base: Path) -> str:
    """The image's key: its normalised path relative to ``base`` (an absolute path under it too)."""
    root = os.path.abspath(base)
    if os.path.isabs(name) and Path(os.path.abspath(name)).is_relative_to(root):
        return image_key(os.path.relpath(os.path.abspath(name), root))
    return image_key(name)


def load_csv(root: Path | None = None, csv: Path | None = None, higher_is_better: bool = True,
             score_range: tuple[float, float] | None = None, name: str = "csv") -> IQADataset:
    """Read a ``path,score[,ref]`` CSV (or a pyiqa/LoDa meta-info CSV) into a dataset."""
    source = _csv_path(Path(root) if root else None, Path(csv) if csv else None)
    table = read_table(source)
    path_col, score_col = find_column(table.columns, PATH_COLUMNS), find_column(table.columns, SCORE_COLUMNS)
    if len(table.columns) == 1:
        raise DatasetError(f"{source}: has one column {str(table.columns[0])!r}; needs an image column "
                           f"({'/'.join(PATH_COLUMNS)}) and a score column ({'/'.join(SCORE_COLUMNS)})")
    if path_col is None or score_col is None:
        raise DatasetError(f"{source}: needs an image column ({'/'.join(PATH_COLUMNS)}) and a score column "
                           f"({'/'.join(SCORE_COLUMNS)}); found {list(table.columns)}")
    table = finite_rows(table, score_col, source)
    ref_col, subset_col = find_column(table.columns, REF_COLUMNS), find_column(table.columns, SUBSET_COLUMNS)
    names = [str(n).strip() for n in table[path_col]]
    base = _base_dir(names, Path(root) if root else None, source.parent)
    names = _normalise_names(names, base, source)
    refs = table[ref_col] if ref_col else [None] * len(table)
    subsets = table[subset_col] if subset_col else [None] * len(table)
    records = [IQARecord(path=base / n, score=float(s), key=_key(n, base), ref=_ref(r), subset=_subset(sub))
               for n, s, r, sub in zip(names, table[score_col], refs, subsets)]
    records = merge_duplicates(check_not_empty(records, base, source), source)
    scores = [r.score for r in records]
    # Without a given range the min/max below is measured over every record (test labels too):
    # recorded as such, so training re-measures it on its own part (IQADataset.score_spec_of).
    lo, hi = score_range or (min(scores), max(scores))
    label = {"mos": "MOS", "dmos": "DMOS"}.get(str(score_col).lower(), str(score_col))
    spec = ScoreSpec(name=label, min=float(lo), max=float(hi), higher_is_better=higher_is_better)
    return IQADataset(name, base, records, spec, str(source), range_declared=score_range is not None)
