"""The default model shipped inside the package, and its evaluation data (see MODEL_CARD.md beside it).

This module only locates packaged files: the checkpoint, the artifacts exported from it
(:data:`PACKAGED`, rebuilt with ``python -m glia_edge.recipes.package_artifacts``), the sample
images, and the default model's training, validation, test and calibration sets, described as data
in ``glia_vit_nano.synthetic.sets.json`` and written on demand with
:func:`glia_edge.distortions.make_dataset`. The recipe that trains the model lives in
:mod:`glia_edge.recipes.default_model`.
"""
from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glia_edge.errors import CheckpointError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "glia_vit_nano.synthetic"
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SyntheticSet:
    """Graded distortions of named bundled photos: ``photos`` x ``types`` x 5 levels (``tiles`` per
    photo, plus a grey-level copy of each colour part with ``grey_copies``)."""

    photos: tuple[str, ...]
    types: tuple[str, ...]
    seed: int
    tiles: int
    grey_copies: bool = False

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> SyntheticSet:
        """A set from its JSON form (a sets file entry, or a work folder's record of its set)."""
        return cls(tuple(spec["photos"]), tuple(spec["types"]), int(spec["seed"]), int(spec["tiles"]),
                   bool(spec.get("grey_copies", False)))

    def write(self, out_dir: Path, *, types: tuple[str, ...] | None = None, progress: bool = False) -> Path:
        """Write the set (or the subset of ``types``: the same images) into ``out_dir``; returns its labels.csv."""
        from glia_edge.distortions import make_dataset, reference_images

        refs = reference_images(names=self.photos, max_tiles=self.tiles, grey_copies=self.grey_copies)
        return make_dataset(out_dir, refs, types=types or self.types, seed=self.seed, progress=progress)


def default_checkpoint() -> Path:
    """Path of the packaged default checkpoint (``glia_vit_nano.synthetic.safetensors``)."""
    path = _HERE / f"{DEFAULT_MODEL}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"the default model {DEFAULT_MODEL} is not in this installation ({path}); "
                              "pass a model explicitly (--model / --checkpoint)")
    return path


@dataclass(frozen=True)
class PackagedArtifact:
    """One way to run the default model: a packaged file and the runtime that opens it.

    ``runtime`` is the format-table row whose backend runs the file (``openvino`` also runs the
    ONNX model); ``module`` is the Python package that runtime needs.
    """

    runtime: str
    precision: str
    file: str
    module: str

    @property
    def path(self) -> Path:
        return _HERE / self.file

    @property
    def installed(self) -> bool:
        """Whether the runtime's package is importable here (without importing it)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False


#: Files exported from the checkpoint by ``glia_edge.recipes.package_artifacts``: file -> (format, precision).
EXPORTED = {f"{DEFAULT_MODEL}.fp32.onnx": ("onnx", "fp32"),
            f"{DEFAULT_MODEL}.int8.onnx": ("onnx", "int8"),
            f"{DEFAULT_MODEL}.int8.openvino": ("openvino", "int8")}

#: The order in which ``glia_edge.load()`` (and ``score`` / ``watch`` without ``--model``) picks the
#: default model: the first whose runtime is installed (and whose backend takes the options given),
#: among those of the precision asked for (fp32 unless ``precision`` is given). OpenVINO runs the
#: FP32 ONNX pinned to f32, so every FP32 pick gives the checkpoint's scores within float tolerance.
PACKAGED: tuple[PackagedArtifact, ...] = (
    PackagedArtifact("openvino", "fp32", f"{DEFAULT_MODEL}.fp32.onnx", "openvino"),
    PackagedArtifact("onnx", "fp32", f"{DEFAULT_MODEL}.fp32.onnx", "onnxruntime"),
    PackagedArtifact("torch", "fp32", f"{DEFAULT_MODEL}.safetensors", "torch"),
    PackagedArtifact("openvino", "int8", f"{DEFAULT_MODEL}.int8.openvino", "openvino"),
    PackagedArtifact("onnx", "int8", f"{DEFAULT_MODEL}.int8.onnx", "onnxruntime"),
)


def packaged_artifacts(precision: str = "fp32") -> list[PackagedArtifact]:
    """The packaged ways to run the default model at ``precision``, in pick order (files present only)."""
    return [a for a in PACKAGED if a.precision == precision and a.path.exists()]


def sample_images() -> list[Path]:
    """The small sample photos shipped with the package (``glia_edge/weights/samples``)."""
    from glia_edge.preprocess import find_images

    return find_images(_HERE / "samples")


def default_sets() -> dict[str, SyntheticSet]:
    """The default model's ``train``, ``validation`` (epoch and recipe choice, export gate), ``test``
    (the model card's figures) and ``calibration`` (INT8) sets; their photo lists are disjoint."""
    data = json.loads((_HERE / f"{DEFAULT_MODEL}.sets.json").read_text())
    return {name: SyntheticSet.from_dict(spec) for name, spec in data.items() if not name.startswith("_")}


def default_set_csv(name: str) -> Path:
    """The default model's set ``name`` (see :func:`default_sets`), written once into the cache
    (``$GLIA_EDGE_CACHE``, under a name that changes with the set's definition); its ``labels.csv``."""
    import hashlib
    from dataclasses import asdict

    from glia_edge.data.base import cache_root

    spec = default_sets()[name]
    tag = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:8]
    csv_path = cache_root() / f"{DEFAULT_MODEL}.{name}-{tag}" / "labels.csv"
    if not csv_path.is_file():
        log.info("writing the %s images of %s to %s", name, DEFAULT_MODEL, csv_path.parent)
        spec.write(csv_path.parent)
    return csv_path


def default_calibration() -> Path:
    """INT8 calibration images for the default model (training photos), as :func:`default_set_csv`."""
    return default_set_csv("calibration")
