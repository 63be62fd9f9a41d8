"""What a batch job scores: files, folders, globs, manifests and pyarrow-filesystem URIs.

Every input becomes one string, its *source*, which is also its identity in the output (the
``path`` column) and what a resumed job uses to skip finished work:

- a local file, folder (searched recursively for image suffixes) or glob, as ``glia-edge score``
  takes them;
- a CSV or Parquet *manifest* whose path column lists images; relative paths are taken relative to
  the manifest's folder;
- a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://``, ``gs://``, ``abfs://``,
  ``hdfs://``, ``file://``), a single object or a prefix searched recursively. The query string
  (``?endpoint_override=...``) is kept so each worker can rebuild the filesystem.

Decoding happens on the workers: :func:`load_source` turns a source into the uint8 crops that
``glia-edge score`` would score for it (``preprocess.crops_uint8``), with the same reasons for
failure that the preprocessing definition gives for local files.
"""
from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from glia_edge.errors import ImageLoadError
from glia_edge.preprocess import IMAGE_SUFFIXES, NO_MATCH, PreprocessConfig, crops_uint8, expand_local, unique_paths

log = logging.getLogger(__name__)

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(source: str) -> bool:
    """``scheme://...`` with a scheme of two or more letters (so ``C:/x`` stays a path)."""
    return bool(_URI.match(source))


@lru_cache(maxsize=32)
def _filesystem(scheme: str, netloc: str, query: str) -> Any:
    from pyarrow import fs

    uri = urlunsplit((scheme, netloc, "/", query, ""))
    return fs.FileSystem.from_uri(uri)[0]


def _split_uri(uri: str) -> tuple[Any, str]:
    """A URI -> (pyarrow filesystem, path inside it); filesystems are cached per process."""
    from pyarrow import fs

    parts = urlsplit(uri)
    if parts.scheme == "file":
        return fs.LocalFileSystem(), parts.path
    filesystem = _filesystem(parts.scheme, parts.netloc, parts.query)
    return filesystem, f"{parts.netloc}{parts.path}"


def _with_path(uri: str, inner: str) -> str:
    """The URI for ``inner`` (a path inside the URI's filesystem), keeping scheme and query."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return urlunsplit(("file", "", inner, parts.query, ""))
    bucket, _, key = inner.partition("/")
    return urlunsplit((parts.scheme, bucket, "/" + key, parts.query, ""))


def _expand_uri(uri: str) -> list[str]:
    from pyarrow import fs

    filesystem, inner = _split_uri(uri)
    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.Directory:
        selector = fs.FileSelector(inner.rstrip("/"), recursive=True)
        found = sorted(i.path for i in filesystem.get_file_info(selector)
                       if i.type == fs.FileType.File and Path(i.path).suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            log.warning("%s: holds no image files (%s)", uri, " ".join(IMAGE_SUFFIXES))
        return [_with_path(uri, p) for p in found]
    return [uri]  # a file, or missing (then reported as "file not found" for that source)


def read_manifest(manifest: str, column: str = "path") -> list[str]:
    """The sources a CSV or Parquet manifest lists in ``column`` (blank cells are skipped)."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    parquet = manifest.lower().split("?")[0].endswith((".parquet", ".pq"))
    # The path column is read as text, so names like 0001 are not turned into numbers.
    as_text = pa_csv.ConvertOptions(strings_can_be_null=True, column_types={column: "string"})
    if is_uri(manifest):
        filesystem, inner = _split_uri(manifest)
        with filesystem.open_input_file(inner) as fh:
            table = pq.read_table(fh) if parquet else pa_csv.read_csv(fh, convert_options=as_text)
        base = None
    else:
        if not Path(manifest).is_file():
            raise FileNotFoundError(f"manifest not found: {manifest}")
        table = pq.read_table(manifest) if parquet else pa_csv.read_csv(manifest, convert_options=as_text)
        base = Path(manifest).parent
    if column not in table.column_names:
        raise ValueError(f"{manifest}: no column {column!r} (columns: {', '.join(table.column_names)})")
    sources: list[str] = []
    for value in table.column(column).to_pylist():
        if value is None or not str(value).strip():
            continue
        value = str(value).strip()
        if base is not None and not is_uri(value) and not Path(value).is_absolute():
            value = str(base / value)
        sources.append(value)
    return sources


def expand_inputs(patterns: Iterable[str], manifests: Iterable[str] = (), column: str = "path"
                  ) -> tuple[list[str], dict[str, str]]:
    """All sources in input order without duplicates, and which of them cannot be read, with the
    reason (a pattern that matched nothing, a folder that cannot be listed)."""
    sources: list[str] = []
    problems: dict[str, str] = {}
    for pattern in patterns:
        if is_uri(pattern):
            found = _expand_uri(pattern)
            if not found:
                problems[pattern] = NO_MATCH
                sources.append(pattern)
            sources.extend(found)
            continue
        entries, _ = expand_local(pattern)  # files skipped for their suffix are not inputs here
        for entry in entries:
            if isinstance(entry, str):
                sources.append(entry)
            else:
                problems.setdefault(*entry)
                sources.append(entry[0])
    for manifest in manifests:
        sources.extend(read_manifest(manifest, column))
    unique = unique_paths(sources, key=lambda s: s if is_uri(s) else os.path.abspath(s))
    if len(unique) < len(sources):
        log.warning("%d duplicate inputs listed more than once are scored once", len(sources) - len(unique))
    return unique, problems


def load_source(source: str, cfg: PreprocessConfig, crops: int | None = None) -> np.ndarray:
    """One source's (n, S, S, 3) uint8 crops, cut by the preprocessing definition exactly as the
    runtimes cut them (``crops_uint8``: steps 1-4); raises :class:`ImageLoadError` with the reason."""
    if not is_uri(source):
        return crops_uint8(source, cfg, crops=crops)
    from pyarrow import fs

    try:
        filesystem, inner = _split_uri(source)
        info = filesystem.get_file_info(inner)
        if info.type == fs.FileType.NotFound:
            raise ImageLoadError(source, "file not found")
        if info.type == fs.FileType.Directory:
            raise ImageLoadError(source, "is a directory, not an image")
        with filesystem.open_input_file(inner) as fh:
            data = fh.readall()
    except ImageLoadError:
        raise
    except (OSError, ValueError) as exc:  # unreachable store, permission, malformed URI
        raise ImageLoadError(source, f"cannot read ({exc})") from None
    if not data:
        raise ImageLoadError(source, "empty file")
    try:
        return crops_uint8(data, cfg, crops=crops)
    except ImageLoadError as exc:
        raise ImageLoadError(source, exc.reason) from None
