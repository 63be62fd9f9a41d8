"""LIVE In the Wild Image Quality Challenge (Ghadiyaram & Bovik, IEEE TIP 2016).

1,162 authentically distorted photos in ``Images/`` with MOS on 0-100. Names and scores come
from MATLAB files in ``Data/``: ``AllImages_release.mat`` (a cell column ``AllImages_release``)
and ``AllMOS_release.mat`` (a row ``AllMOS_release``). Their first 7 entries are the
training images shown to raters (kept in ``Images/trainingImages/``) and are dropped, as every
published protocol does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.data.base import IQADataset, IQARecord, check_not_empty, merge_duplicates, require_dir, require_file
from glia_edge.errors import DatasetError
from glia_edge.meta import ScoreSpec

NAMES_MAT = "AllImages_release.mat"
MOS_MAT = "AllMOS_release.mat"
TRAINING_ENTRIES = 7


def _read_mat(path: Path, variable: str) -> np.ndarray:
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError for bad files
        raise DatasetError(f"cannot read MATLAB file {path}: {exc}") from exc
    if variable not in data:
        found = [k for k in data if not k.startswith("__")]
        raise DatasetError(f"{path}: no variable {variable!r} (found {found})")
    return data[variable]


def _cell_strings(cells: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (loaded as nested object arrays) -> Python strings."""
    out = []
    for cell in cells.reshape(-1):
        value: Any = cell
        while isinstance(value, np.ndarray):
            value = value.reshape(-1)[0] if value.size else ""
        out.append(str(value).strip())
    return out


def load_livec(root: Path) -> IQADataset:
    """Read LIVE Challenge from ``root`` (holding ``Images/`` and ``Data/``)."""
    root = require_dir(Path(root), "LIVE Challenge root")
    images = require_dir(root / "Images", "LIVE Challenge image folder")
    names_mat = require_file([root / "Data" / NAMES_MAT, root / NAMES_MAT], "LIVE Challenge image list")
    mos_mat = require_file([root / "Data" / MOS_MAT, root / MOS_MAT], "LIVE Challenge MOS file")
    names = _cell_strings(_read_mat(names_mat, "AllImages_release"))
    mos = np.asarray(_read_mat(mos_mat, "AllMOS_release"), dtype=np.float64).reshape(-1)
    if len(names) != len(mos):
        raise DatasetError(f"{names_mat} lists {len(names)} images but {mos_mat} has {len(mos)} scores")
    records = [IQARecord(path=images / name, score=float(score), key=name)
               for name, score in list(zip(names, mos))[TRAINING_ENTRIES:] if np.isfinite(score)]
    records = merge_duplicates(check_not_empty(records, root, names_mat), names_mat)
    return IQADataset("livec", root, records, ScoreSpec(name="MOS", min=0.0, max=100.0, higher_is_better=True),
                      str(names_mat))
