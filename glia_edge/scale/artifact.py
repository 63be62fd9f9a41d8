"""Ship an artifact to Ray workers: its files travel through Ray's object store, not a shared disk.

A cluster's worker nodes need not see the driver's filesystem, so the driver reads every file the
artifact consists of (an OpenVINO IR's ``.xml`` and ``.bin``, a TensorRT engine and its sidecar
``.json``, an ONNX model and its external ``.onnx.data``, a checkpoint) into an
:class:`ArtifactBundle`, puts it into the object store once, and each actor writes it to a
per-node cache folder named by its hash before calling :func:`glia_edge.load` on it. Nothing here
imports Ray, so the bundle can be built and tested without it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def artifact_files(path: Path) -> tuple[Path, list[Path]]:
    """The artifact's root folder and the files that make it up (the main file first).

    An IR folder contributes every file under it; a single file brings the companions its format
    needs when they exist beside it.
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return path, files
    companions: list[Path] = []
    suffix = path.suffix.lower()
    if suffix == ".xml":
        companions = [path.with_suffix(".bin")]
    elif suffix == ".onnx":
        companions = [path.with_name(path.name + ".data")]
    elif suffix in (".engine", ".plan"):
        companions = [path.with_name(path.name + ".json")]
    return path.parent, [path, *(p for p in companions if p.is_file())]


@dataclass(frozen=True)
class ArtifactBundle:
    """An artifact's files in memory, the name ``load()`` takes inside them, and their hash."""

    name: str
    files: tuple[tuple[str, bytes], ...]
    sha256: str

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> "ArtifactBundle":
        """Read an artifact (file or IR folder); raises FileNotFoundError if it is not there."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact not found: {path}")
        root, files = artifact_files(path)
        items = tuple((str(f.relative_to(root)), f.read_bytes()) for f in files)
        if not items:
            raise FileNotFoundError(f"artifact folder holds no files: {path}")
        name = path.name if not path.is_dir() else path.name + "/"
        return cls(name=name, files=items, sha256=bundle_sha256(items))

    @property
    def size_bytes(self) -> int:
        return sum(len(data) for _, data in self.files)

    def materialize(self, cache_dir: Path | None = None) -> Path:
        """Write the files once per node under ``cache_dir/<key>/`` and return the path to load.

        The key hashes the files' names with their bytes: the same bytes shipped under another name
        (a copy of a model) get their own folder, where that name exists. The folder is built beside
        its final name and renamed into place, so an actor killed while writing leaves no
        half-written artifact for the next one to load.
        """
        cache_dir = cache_dir or Path(tempfile.gettempdir()) / "glia-edge-artifacts"
        final = cache_dir / _names_and_bytes_sha256(self.files)
        if not final.is_dir():
            cache_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{self.sha256[:12]}.", dir=cache_dir))
            try:
                for rel, data in self.files:
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                try:
                    os.replace(staging, final)
                except OSError:  # another actor on this node finished first: use its copy
                    if not final.is_dir():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return final if self.name.endswith("/") else final / self.name

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "files": [rel for rel, _ in self.files],
                "bytes": self.size_bytes}


def bundle_sha256(items: tuple[tuple[str, bytes], ...]) -> str:
    """One file: the SHA-256 of its bytes (what ``sha256sum`` prints). Several: the SHA-256 of the
    sorted ``name  sha256`` lines of its files, so renaming or changing any file changes it."""
    if len(items) == 1:
        return hashlib.sha256(items[0][1]).hexdigest()
    return _names_and_bytes_sha256(items)


def _names_and_bytes_sha256(items: tuple[tuple[str, bytes], ...]) -> str:
    lines = sorted(f"{rel}  {hashlib.sha256(data).hexdigest()}\n" for rel, data in items)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_artifact_meta(path: Path) -> Any:
    """The artifact's metadata, read on the driver before any worker starts, so an unusable artifact
    is one clear error here instead of actors failing on the cluster."""
    from glia_edge.errors import GliaError, UnsupportedArtifactError
    from glia_edge.runtimes import read_meta

    try:
        return read_meta(path)
    except (GliaError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - a runtime's own parse error (protobuf, XML ...)
        raise UnsupportedArtifactError(f"{path}: cannot read the artifact ({type(exc).__name__}: {exc})") from None


def default_model(precision: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The packaged default model as ``glia-edge score`` picks it on this install: its file, and the
    ``load()`` options that choose the same runtime on the workers (which need the same install)."""
    from glia_edge.runtimes.base import pick_default

    path, cls = pick_default(**({"precision": precision} if precision else {}))
    return path, {"runtime": cls.format}
