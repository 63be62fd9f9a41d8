"""KonIQ-10k (Hosu et al., IEEE TIP 2020): 10,073 in-the-wild photos of 1024x768 with crowd MOS.

Two official annotation files are understood:

- ``koniq10k_distributions_sets.csv`` from the dataset's code repository: ``image_name, c1..c5,
  c_total, MOS, SD, set`` with MOS on 0-100 and ``set`` the official training / validation /
  test split (7,058 / 1,000 / 2,015). Preferred when present; pyiqa's meta-info uses this 0-100
  scale.
- ``koniq10k_scores_and_distributions.csv`` from the download: ``image_name, c1..c5, c_total,
  MOS, SD, MOS_zscore`` with MOS on 1-5. LoDa builds its meta-info from this file, so LoDa's
  scores (and RMSE) are on the 1-5 scale; its split indices also follow this file's row order
  (``glia_edge.data.loda_splits``).

RMSE is reported on the scale of the file the set was loaded from (after the logistic fit), and
the checkpoint and ``glia-edge reproduce``'s table name that scale; pass ``--csv`` to choose.
Images are read from ``1024x768/`` (or the half-size ``512x384/``).
"""
from __future__ import annotations

from pathlib import Path

from glia_edge.data.base import (SUBSET_NAMES, IQADataset, IQARecord, check_not_empty, finite_rows, merge_duplicates,
                                 read_table, require_columns, require_dir, require_file)
from glia_edge.errors import DatasetError
from glia_edge.meta import ScoreSpec

SETS_CSV = "koniq10k_distributions_sets.csv"
SCORES_CSV = "koniq10k_scores_and_distributions.csv"
IMAGE_DIRS = ("1024x768", "512x384")
#: The nominal scale of each score column: the MOS's range depends on the file it comes from.
SCALES = {SETS_CSV: (0.0, 100.0), SCORES_CSV: (1.0, 5.0)}


def _image_dir(root: Path) -> Path:
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"KonIQ-10k images not found: expected {' or '.join(IMAGE_DIRS)}/ under {root}")


def _annotation(root: Path, csv: Path | None) -> Path:
    if csv is not None:
        return require_file([csv], "KonIQ-10k annotation")
    return require_file([root / SETS_CSV, root / SCORES_CSV, root / "metadata" / SETS_CSV],
                        "KonIQ-10k annotation CSV")


def load_koniq(root: Path, csv: Path | None = None, score_column: str = "MOS") -> IQADataset:
    """Read KonIQ-10k from ``root`` (``csv`` overrides which annotation file is used)."""
    root = require_dir(Path(root), "KonIQ-10k root")
    images = _image_dir(root)
    source = _annotation(root, csv)
    table = read_table(source)
    require_columns(table, ["image_name", score_column], source)
    table = finite_rows(table, score_column, source)
    sets = table["set"] if "set" in table.columns else [None] * len(table)
    records = [IQARecord(path=images / str(name).strip(), score=float(mos), key=str(name).strip(),
                         subset=SUBSET_NAMES.get(str(subset).strip().lower()) if subset is not None else None)
               for name, mos, subset in zip(table["image_name"], table[score_column], sets)]
    records = merge_duplicates(check_not_empty(records, root, source), source)
    declared = source.name in SCALES or score_column == "MOS_zscore"
    lo, hi = SCALES.get(source.name, (float(table[score_column].min()), float(table[score_column].max())))
    if score_column == "MOS_zscore":
        lo, hi = 0.0, 100.0
    # A renamed annotation has no known scale: its measured range is marked as such (range_declared).
    return IQADataset("koniq", root, records, ScoreSpec(name="MOS", min=lo, max=hi, higher_is_better=True),
                      str(source), range_declared=declared)
