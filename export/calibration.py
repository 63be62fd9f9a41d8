"""One re-iterable calibration source for every INT8 quantizer, and the image lists behind it.

A :class:`CalibrationSet` is a folder or a CSV of images (a few hundred by default), cut into
crops by the one preprocessing definition (:mod:`glia_edge.preprocess`) exactly as the runtimes
cut them. The crops are decoded once (with a progress bar) and kept as uint8, so any number of
consumers can iterate them: thin adapters make a fresh ONNX Runtime ``CalibrationDataReader`` or an
``nncf.Dataset`` on each call, and nobody rewinds a spent reader. ``sha256`` identifies the
set's content (image bytes, preprocessing, crop count) for the artifact's metadata.

The same list reader serves the accuracy gate's ``--val DIR|CSV`` (a CSV may carry labels).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from glia_edge.errors import CalibrationError, ImageLoadError
from glia_edge.preprocess import PreprocessConfig, find_images, preprocess

log = logging.getLogger(__name__)

DEFAULT_CALIB_SIZE = 300
PATH_COLUMNS = ("path", "image", "image_name", "img_name", "dist_name", "dist_img", "file", "filename")
LABEL_COLUMNS = ("score", "mos", "dmos", "label", "quality")


@dataclass(frozen=True)
class ImageList:
    """Image paths and, when a CSV provides them, one label per image."""

    paths: tuple[Path, ...]
    labels: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, size: int | None, seed: int = 0) -> "ImageList":
        """A deterministic random subset of ``size`` images (kept in list order); all when smaller."""
        if size is None or size >= len(self.paths):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.paths), size, replace=False))
        labels = tuple(self.labels[i] for i in keep) if self.labels is not None else None
        return ImageList(tuple(self.paths[i] for i in keep), labels)


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _read_csv(path: Path) -> ImageList:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            path_col, label_col = _pick(columns, PATH_COLUMNS), _pick(columns, LABEL_COLUMNS)
            if path_col is None:
                raise CalibrationError(f"{path}: no image column (looked for {', '.join(PATH_COLUMNS)}; "
                                       f"found {columns})")
            rows = list(reader)
    except UnicodeDecodeError as exc:  # the codec's message names no file
        raise CalibrationError(f"{path}: not a UTF-8 CSV (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise CalibrationError(f"{path}: not a readable CSV ({exc})") from None
    paths = tuple((path.parent / row[path_col].strip()).resolve() for row in rows if row.get(path_col, "").strip())
    labels = None
    if label_col is not None:
        try:
            labels = tuple(float(row[label_col]) for row in rows if row.get(path_col, "").strip())
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"{path}: column {label_col!r} is not numeric ({exc})") from None
    return ImageList(paths, labels)


def read_image_list(source: str | Path) -> ImageList:
    """Images of a folder (recursive, sorted) or a CSV (``path`` column, optional ``score``/``mos``)."""
    source = Path(source)
    if source.is_dir():
        images = ImageList(tuple(find_images(source)))
    elif source.is_file() and source.suffix.lower() == ".csv":
        images = _read_csv(source)
    elif source.exists():
        raise CalibrationError(f"{source}: expected a folder of images or a CSV listing them")
    else:
        raise CalibrationError(f"{source}: calibration/validation source not found")
    if not images.paths:
        raise CalibrationError(f"{source}: no images found")
    return images


@dataclass
class CalibrationSet:
    """Preprocessed calibration crops, decoded on first use and re-iterable as float32 batches."""

    images: ImageList
    preprocess: PreprocessConfig
    crops: int = 1
    source: str = ""
    _cache: np.ndarray | None = field(default=None, init=False, repr=False)
    _sha256: str | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_path(cls, source: str | Path, preprocess: PreprocessConfig, *, size: int | None = DEFAULT_CALIB_SIZE,
                  crops: int = 1, seed: int = 0) -> "CalibrationSet":
        """Up to ``size`` images of a folder or CSV (a seeded subset when there are more)."""
        images = read_image_list(source).subset(size, seed)
        return cls(images, preprocess, crops, str(source))

    @property
    def crop_array(self) -> np.ndarray:
        """All crops, (N, 3, S, S) uint8; decoded once, unreadable images skipped with a warning."""
        if self._cache is None:
            self._cache = self._decode()
        return self._cache

    def _decode(self) -> np.ndarray:
        from tqdm.auto import tqdm

        digest = hashlib.sha256(json.dumps([self.preprocess.to_dict(), self.crops], sort_keys=True).encode())
        out: list[np.ndarray] = []
        for path in tqdm(self.images.paths, desc="calibration images", unit="img", leave=False):
            try:
                data = Path(path).read_bytes()
                arr = preprocess(data, self.preprocess, crops=self.crops)
            except (ImageLoadError, OSError) as exc:
                log.warning("calibration: skipping %s (%s)", path, getattr(exc, "reason", exc))
                continue
            digest.update(hashlib.sha256(data).digest())
            out.append(np.round(arr * 255.0).astype(np.uint8))
        if not out:
            raise CalibrationError(f"{self.source or 'calibration set'}: none of {len(self.images)} images could be read")
        self._sha256 = digest.hexdigest()
        log.info("calibration: %d crops from %d images (%s)", sum(len(a) for a in out), len(out), self.source)
        return np.concatenate(out)

    @property
    def sha256(self) -> str:
        """Content hash of the images actually used, the preprocessing and the crop count."""
        if self._sha256 is None:
            _ = self.crop_array
        assert self._sha256 is not None
        return self._sha256

    @property
    def used_images(self) -> int:
        """Images decoded into crops (the listed ones less those skipped as unreadable)."""
        return len(self.crop_array) // self.crops

    def __len__(self) -> int:
        return len(self.crop_array)

    def batches(self, batch_size: int = 1, *, pad_to: int | None = None) -> Iterator[np.ndarray]:
        """Float32 NCHW batches in [0, 1]; ``pad_to`` fills the last batch to a fixed size by wrapping."""
        crops = self.crop_array
        for start in range(0, len(crops), batch_size):
            chunk = crops[start:start + batch_size]
            if pad_to and len(chunk) < pad_to:
                chunk = np.take(crops, np.arange(start, start + pad_to) % len(crops), axis=0)
            yield chunk.astype(np.float32) / np.float32(255.0)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches(1)

    def ort_reader(self, input_name: str = "images", batch_size: int = 1) -> Any:
        """A fresh ONNX Runtime ``CalibrationDataReader`` over this set."""
        from onnxruntime.quantization import CalibrationDataReader

        calib = self

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = calib.batches(batch_size, pad_to=batch_size)

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self._it, None)
                return None if batch is None else {input_name: batch}

            def __len__(self) -> int:
                return -(-len(calib) // batch_size)

        return _Reader()

    def nncf_dataset(self, batch_size: int = 1) -> Any:
        """An ``nncf.Dataset`` over this set (re-iterable: NNCF may pass over it several times)."""
        import nncf

        calib = self

        class _Batches:
            def __iter__(self) -> Iterator[np.ndarray]:
                return calib.batches(batch_size, pad_to=batch_size)

            def __len__(self) -> int:
                return -(-len(calib) // batch_size)

        return nncf.Dataset(_Batches())
