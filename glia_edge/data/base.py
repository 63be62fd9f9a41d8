"""The record list every IQA dataset loader returns, and the up-front check of its image files.

A loader reads a set's annotation (CSV, .mat, .xlsx) into an :class:`IQADataset`: one
:class:`IQARecord` per annotated image (path, score, reference image or ``None``, official
subset) plus the :class:`~glia_edge.meta.ScoreSpec` of the set's scale. Splits are made from the
annotation (so they do not move when a file goes bad); :func:`validate` then drops files that
are missing, empty or not images, with one warning each, and stops with :class:`DatasetError`
when nothing usable is left.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, UnidentifiedImageError

from glia_edge.errors import DatasetError
from glia_edge.meta import ScoreSpec
from glia_edge.preprocess import mode_problem

log = logging.getLogger(__name__)

#: Official-subset names as the sets spell them, mapped to the names splits use.
SUBSET_NAMES = {"training": "train", "train": "train", "validation": "val", "val": "val", "valid": "val",
                "test": "test", "testing": "test"}


@dataclass(frozen=True)
class IQARecord:
    """One annotated image.

    ``key`` is the image's name as the annotation gives it (relative to the dataset root), normalised
    by :func:`merge_duplicates` (``./a.png`` is ``a.png``); split
    files list keys (or reference names), never absolute paths, so they survive a moved root.
    """

    path: Path
    score: float
    key: str
    ref: str | None = None
    subset: str | None = None  # official split membership ("train" / "val" / "test"), where a set has one

    @property
    def group(self) -> str:
        """What splits keep together: the reference image where there is one, else the image."""
        return self.ref if self.ref is not None else self.key


@dataclass
class IQADataset:
    """An IQA set: its records, its score scale and where it came from."""

    name: str
    root: Path
    records: list[IQARecord]
    score: ScoreSpec
    source: str  # the annotation file the records were read from
    #: Records a loader already found unusable (key -> reason); :func:`validate` skips them.
    rejected: dict[str, str] = field(default_factory=dict)
    #: True when ``score.min``/``max`` is the set's declared scale (KonIQ-10k's 0-100, KADID-10k's
    #: 1-5, a range passed in); False when the loader only measured it over all records, test labels
    #: included: a model's output range must then be measured on its training part
    #: (:meth:`score_spec_of`), never taken from ``score``.
    range_declared: bool = True

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_refs(self) -> bool:
        return any(r.ref is not None for r in self.records)

    @property
    def has_official_split(self) -> bool:
        return any(r.subset is not None for r in self.records)

    def groups(self) -> list[str]:
        """Sorted unique split units (reference names, or image keys for sets without references)."""
        return sorted({r.group for r in self.records})

    def with_records(self, records: Iterable[IQARecord]) -> "IQADataset":
        return replace(self, records=list(records))

    def scores(self) -> list[float]:
        return [r.score for r in self.records]

    def score_spec_of(self) -> ScoreSpec:
        """The score spec for a model trained on these records: the declared scale as is; a
        measured range measured again over these records only (a training part's range then
        holds no validation or test label)."""
        if self.range_declared or not self.records:
            return self.score
        scores = self.scores()
        return replace(self.score, min=float(min(scores)), max=float(max(scores)))


def cache_root() -> Path:
    """Where derived files (resized copies, split files) go: ``$GLIA_EDGE_CACHE`` or ~/.cache/glia-edge."""
    env = os.environ.get("GLIA_EDGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "glia-edge"


def root_tag(root: Path) -> str:
    """A short stable tag for a dataset root, to keep caches of different copies apart."""
    return hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}")
    return path


def require_file(candidates: Iterable[Path], what: str) -> Path:
    """The first existing file of ``candidates``, or a DatasetError listing where it was looked for."""
    tried = list(candidates)
    for path in tried:
        if path.is_file():
            return path
    raise DatasetError(f"{what} not found (looked for {', '.join(str(p) for p in tried)})")


def read_table(path: Path, **kwargs: Any) -> Any:
    """Read a CSV or Excel annotation with pandas, turning parse failures into DatasetError.

    CSVs are read as ``utf-8-sig``: a byte-order mark (Excel's "CSV UTF-8") would otherwise stick
    to the first column's name; files without one read the same as plain UTF-8.
    """
    import pandas as pd

    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path, **kwargs)
        sep = kwargs.pop("sep", None) or _csv_separator(path)
        return pd.read_csv(path, sep=sep, engine="python", **{"encoding": "utf-8-sig", **kwargs})
    except DatasetError:
        raise
    except Exception as exc:  # pandas raises many types for malformed files
        raise DatasetError(f"cannot read annotation {path}: {exc}") from exc


def _csv_separator(path: Path) -> str | None:
    """None (let pandas sniff it) when the header has a usual separator; "," for a one-column
    file, which the sniffer would otherwise split on a letter of its header (``'pa', 'h'``)."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = next((line for line in fh if line.strip()), None)
    if header is None:
        raise DatasetError(f"cannot read annotation {path}: the file is empty")
    return None if any(sep in header.strip() for sep in ",;\t| ") else ","


def require_columns(table: Any, columns: Iterable[str], source: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"{source}: missing column(s) {missing}; found {list(table.columns)}")


def finite_rows(table: Any, score_column: str, source: Path) -> Any:
    """Drop rows whose score is missing, not a number or infinite, with a warning."""
    import numpy as np
    import pandas as pd

    scores = pd.to_numeric(table[score_column], errors="coerce")
    finite = np.isfinite(scores.to_numpy(dtype=float))  # inf would make the label range, and the loss, inf
    bad = int((~finite).sum())
    if bad:
        log.warning("%s: %d row(s) without a finite numeric %s are skipped", source, bad, score_column)
    table = table.assign(**{score_column: scores})
    return table[finite]


def probe_image(path: Path) -> str | None:
    """Cheap check that ``path`` is an image (reads the header only); the reason if it is not.

    A file that passes can still fail to decode (truncated data); the training dataset skips
    those when it meets them.
    """
    try:
        if not path.is_file():
            return "file not found" if not path.exists() else "not a regular file"
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            if img.width <= 0 or img.height <= 0:
                return "image has no pixels"
            problem = mode_problem(img.mode)
            if problem:
                return problem
    except UnidentifiedImageError:
        return "not an image (format not recognised)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"unreadable image header ({exc})"
    return None


def validate(dataset: IQADataset, *, progress: bool = False) -> IQADataset:
    """Keep the records whose files look like images; warn once per skipped file.

    Raises :class:`DatasetError` when no record is usable.
    """
    from tqdm import tqdm

    usable, skipped = [], 0
    records = tqdm(dataset.records, desc=f"checking {dataset.name}", unit="img", disable=not progress, leave=False)
    for rec in records:
        reason = dataset.rejected.get(rec.key) or probe_image(rec.path)
        if reason is None:
            usable.append(rec)
            continue
        skipped += 1
        if rec.key not in dataset.rejected:
            log.warning("skipping %s: %s", rec.path, reason)
    if not usable:
        raise DatasetError(f"{dataset.root}: no usable images ({len(dataset.records)} listed in {dataset.source}, "
                           "none readable; see the warnings above)")
    if skipped:
        log.warning("%s: %d of %d image(s) skipped as unusable", dataset.name, skipped, len(dataset.records))
    return dataset.with_records(usable)


def check_not_empty(records: list[IQARecord], root: Path, source: Path | str) -> list[IQARecord]:
    if not records:
        raise DatasetError(f"{root}: the annotation {source} lists no images")
    return records


def image_key(name: str) -> str:
    """An image's key as splits and duplicate merging compare it: the name normalised (``./a.png``,
    ``img//a.png`` and ``img/x/../a.png`` are one file), with ``/`` separators on every platform."""
    return os.path.normpath(name).replace(os.sep, "/")


def merge_duplicates(records: list[IQARecord], source: Path) -> list[IQARecord]:
    """One record per image key, in first-seen order, scored with the mean of its rows' scores
    (other fields from its first row); one warning naming how many and an example. Keys are
    normalised first (:func:`image_key`): the same file spelled two ways is one image, never one
    in a training part and one in a test part."""
    by_key: dict[str, list[IQARecord]] = {}
    for rec in records:
        key = image_key(rec.key)
        by_key.setdefault(key, []).append(rec if key == rec.key else replace(rec, key=key))
    repeated = {k: v for k, v in by_key.items() if len(v) > 1}
    if not repeated:
        return records
    key, rows = next(iter(repeated.items()))
    log.warning("%s: %d image(s) listed more than once (%d rows; e.g. %s with scores %s); each is kept once "
                "with the mean of its scores", source, len(repeated), sum(len(v) for v in repeated.values()),
                key, ", ".join(f"{r.score:g}" for r in rows))
    return [replace(v[0], score=float(sum(r.score for r in v) / len(v))) if len(v) > 1 else v[0]
            for v in by_key.values()]
