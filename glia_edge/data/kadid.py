"""KADID-10k (Lin, Hosu & Saupe, QoMEX 2019): 81 references x 25 distortions x 5 levels.

``images/`` holds the references (``I01.png``) and the distorted images (``I01_01_01.png``);
``dmos.csv`` has ``dist_img, ref_img, dmos, var``. Despite its name ``dmos`` is a mean opinion
score on 1-5 with higher meaning better. Records are the distorted images, grouped by reference
so that no reference content appears on both sides of a split.
"""
from __future__ import annotations

from pathlib import Path

from glia_edge.data.base import (IQADataset, IQARecord, check_not_empty, finite_rows, merge_duplicates, read_table,
                                 require_columns, require_dir, require_file)
from glia_edge.meta import ScoreSpec

COLUMNS = ("dist_img", "ref_img", "dmos")


def load_kadid(root: Path, csv: Path | None = None) -> IQADataset:
    """Read KADID-10k from ``root`` (holding ``images/`` and ``dmos.csv``)."""
    root = require_dir(Path(root), "KADID-10k root")
    images = require_dir(root / "images", "KADID-10k image folder")
    source = require_file([Path(csv)] if csv else [root / "dmos.csv", images / "dmos.csv"], "KADID-10k dmos.csv")
    table = read_table(source)
    require_columns(table, COLUMNS, source)
    table = finite_rows(table, "dmos", source)
    records = [IQARecord(path=images / str(dist).strip(), score=float(dmos), key=str(dist).strip(),
                         ref=str(ref).strip())
               for dist, ref, dmos in zip(table["dist_img"], table["ref_img"], table["dmos"])]
    records = merge_duplicates(check_not_empty(records, root, source), source)
    return IQADataset("kadid", root, records, ScoreSpec(name="DMOS", min=1.0, max=5.0, higher_is_better=True),
                      str(source))
