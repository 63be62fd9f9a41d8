"""SPAQ (Fang et al., CVPR 2020): 11,125 smartphone photos with MOS on 0-100.

Images are in ``TestImage/``; scores in an Excel sheet (``Annotations/MOS and Image attribute
scores.xlsx`` in the release) with columns ``Image name``, ``MOS`` and five attribute scores.
The photos are up to 4000x3000, so decoding them every epoch would dominate training: they are
resized once (short side 384 by the shared preprocessing's own decode and resize, steps 1-3;
the cache folder carries the preprocessing version) into a cached lossless PNG copy, and the records point at the copies. A lossy cache
would add compression artefacts to a quality dataset.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from glia_edge.atomic import atomic_write
from glia_edge.data.base import (IQADataset, IQARecord, cache_root, check_not_empty, finite_rows, merge_duplicates,
                                 read_table, require_columns, require_dir, root_tag)
from glia_edge.errors import DatasetError, ImageLoadError
from glia_edge.meta import ScoreSpec
from glia_edge.preprocess import PREPROCESS_VERSION, PreprocessConfig, load_resized

log = logging.getLogger(__name__)

NAME_COLUMN, MOS_COLUMN = "Image name", "MOS"


def _annotation(root: Path, xlsx: Path | None) -> Path:
    if xlsx is not None:
        if not Path(xlsx).is_file():
            raise DatasetError(f"SPAQ annotation not found: {xlsx}")
        return Path(xlsx)
    candidates = sorted(root.glob("*.xlsx")) + sorted((root / "Annotations").glob("*.xlsx"))
    # The release has several sheets (EXIF tags, scene labels); the MOS one has "MOS" in its name.
    with_mos = [p for p in candidates if "mos" in p.name.lower()]
    if with_mos or candidates:
        return (with_mos or candidates)[0]
    raise DatasetError(f"SPAQ annotation not found: no .xlsx in {root} or {root / 'Annotations'}")


def cache_folder(root: Path, short_side: int) -> Path:
    """Named by the short side and the preprocessing version: copies made by an older definition
    are not reused (a new folder is built)."""
    return cache_root() / "spaq" / root_tag(root) / f"short{short_side}-v{PREPROCESS_VERSION}"


def _cache_one(src: Path, dst: Path, short_side: int) -> str | None:
    """Write the resized copy of ``src`` to ``dst`` (atomically); the reason if it cannot."""
    if dst.is_file() and dst.stat().st_size > 0:
        return None
    try:
        img = load_resized(src, PreprocessConfig(short_side=short_side, crop_size=min(224, short_side)))
    except ImageLoadError as exc:
        return exc.reason
    atomic_write(dst, lambda tmp: img.save(tmp, format="PNG", compress_level=1))
    return None


def build_cache(records: list[IQARecord], folder: Path, short_side: int,
                workers: int | None = None) -> tuple[list[IQARecord], dict[str, str]]:
    """Resize every record's image into ``folder``; returns records on the copies and the failures."""
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / (Path(r.key).stem + ".png") for r in records]
    todo = sum(not t.is_file() for t in targets)
    if todo:
        log.info("SPAQ: resizing %d image(s) to short side %d into %s (once)", todo, short_side, folder)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        reasons = list(tqdm(pool.map(lambda pair: _cache_one(pair[0].path, pair[1], short_side),
                                     zip(records, targets)),
                            total=len(records), desc="caching SPAQ", unit="img", disable=todo < 50, leave=False))
    out, rejected = [], {}
    for rec, dst, reason in zip(records, targets, reasons):
        if reason is None:
            out.append(IQARecord(path=dst, score=rec.score, key=rec.key))
        else:
            log.warning("skipping %s: %s", rec.path, reason)
            rejected[rec.key] = reason
            out.append(rec)  # kept so splits stay put; validate() skips it by key
    return out, rejected


def load_spaq(root: Path, csv: Path | None = None, short_side: int = 384, cache_dir: Path | None = None,
              workers: int | None = None) -> IQADataset:
    """Read SPAQ from ``root`` and make (or reuse) its resized cache; ``csv`` may name the .xlsx."""
    root = require_dir(Path(root), "SPAQ root")
    images = require_dir(root / "TestImage", "SPAQ image folder")
    source = _annotation(root, csv)
    table = read_table(source)
    require_columns(table, [NAME_COLUMN, MOS_COLUMN], source)
    table = finite_rows(table, MOS_COLUMN, source)
    records = [IQARecord(path=images / str(name).strip(), score=float(mos), key=str(name).strip())
               for name, mos in zip(table[NAME_COLUMN], table[MOS_COLUMN])]
    records = merge_duplicates(check_not_empty(records, root, source), source)
    records, rejected = build_cache(records, Path(cache_dir) if cache_dir else cache_folder(root, short_side),
                                    short_side, workers)
    return IQADataset("spaq", root, records, ScoreSpec(name="MOS", min=0.0, max=100.0, higher_is_better=True),
                      str(source), rejected=rejected)
