"""One metadata schema for checkpoints and every exported artifact (no torch).

Stored as JSON: inside a checkpoint's safetensors header, in ONNX ``metadata_props``, in
OpenVINO ``rt_info`` and in a sidecar ``<engine>.json`` beside a TensorRT engine (engine files
stay plain so trtexec, Triton and DeepStream read them).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from glia_edge.preprocess import PreprocessConfig

SCHEMA_VERSION = 1


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: an undefined figure is ``null``."""
    return value if math.isfinite(value) else None


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN: a metric undefined on constant scores) as None."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):  # numpy scalars
        return json_safe(obj.item())
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes valid JSON: non-finite floats as ``null``; ``allow_nan=False``
    makes any that slip past an error instead of a bare ``NaN`` in the file."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
#: The key under which the JSON is stored in ONNX metadata_props / OpenVINO rt_info / safetensors.
META_KEY = "glia_edge"


@dataclass
class ScoreSpec:
    """What a score means: the training label's name, range and direction, and its standardisation."""

    name: str = "MOS"
    min: float = 0.0
    max: float = 100.0
    higher_is_better: bool = True
    mean: float = 0.0
    std: float = 1.0

    @property
    def range(self) -> float:
        return float(self.max - self.min)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoreSpec":
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


@dataclass
class ArtifactMeta:
    """Everything a runtime needs to score images with an artifact, and its provenance."""

    preset: str
    model_config: dict[str, Any]
    preprocess: dict[str, Any]
    score: dict[str, Any]
    format: str = "torch"
    precision: str = "fp32"
    input_name: str = "images"
    output_name: str = "scores"
    #: What the input tensor is: float32 RGB in [0, 1], NCHW, and the normalisation the graph
    #: itself applies (``normalization_in_graph``: per-channel mean/std), so nobody applies it twice.
    input: dict[str, Any] = field(default_factory=dict)
    source_checkpoint_sha256: str | None = None
    calibration_sha256: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    @property
    def score_spec(self) -> ScoreSpec:
        return ScoreSpec.from_dict(self.score)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return dumps_json(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactMeta":
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})

    @classmethod
    def from_json(cls, text: str) -> "ArtifactMeta":
        return cls.from_dict(json.loads(text))

    def derive(self, **changes: Any) -> "ArtifactMeta":
        """A copy for a derived artifact (export), with fresh tool versions and timestamp."""
        data = {**self.to_dict(), **changes}
        data.pop("created", None)
        data["tools"] = tool_versions()
        return ArtifactMeta.from_dict(data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_TOOLS = ("glia-edge", "torch", "timm", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf", "tensorrt", "numpy")


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools that made an artifact (absent ones are left out)."""
    found = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found
