"""The table of artifact formats that ``export``, ``load`` and ``bench`` all read.

Rows are looked up by name (never by position), after Ultralytics' export-format table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glia_edge.errors import UnsupportedArtifactError


@dataclass(frozen=True)
class ArtifactFormat:
    name: str
    suffixes: tuple[str, ...]
    backend: str  # "module:Class", imported lazily so a camera box needs only its own runtime
    needs_gpu: bool
    precisions: tuple[str, ...]
    description: str


FORMATS: dict[str, ArtifactFormat] = {f.name: f for f in (
    ArtifactFormat("torch", (".safetensors",), "glia_edge.runtimes.torch:TorchBackend", False,
                   ("fp32", "bf16"), "PyTorch checkpoint (reference)"),
    ArtifactFormat("onnx", (".onnx",), "glia_edge.runtimes.onnxruntime:OnnxRuntimeBackend", False,
                   ("fp32", "fp16", "int8"), "ONNX model run by ONNX Runtime"),
    ArtifactFormat("openvino", (".xml",), "glia_edge.runtimes.openvino:OpenVinoBackend", False,
                   ("fp32", "fp16", "bf16", "int8"), "OpenVINO IR (.xml + .bin)"),
    ArtifactFormat("trt", (".engine", ".plan"), "glia_edge.runtimes.tensorrt:TensorRtBackend", True,
                   ("fp32", "fp16", "int8"), "TensorRT engine with a sidecar .json"),
)}


def format_of(path: str | Path) -> ArtifactFormat:
    """The format an artifact path is in, from its suffix (an IR folder counts as OpenVINO)."""
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*.xml")):
            return FORMATS["openvino"]
        raise UnsupportedArtifactError(f"{path}: folder holds no OpenVINO .xml model")
    suffix = path.suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise UnsupportedArtifactError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected one of {known}")


def artifact_size_mb(path: str | Path) -> float:
    """Size on disk; an OpenVINO IR counts its .xml and .bin, an engine its sidecar is left out."""
    path = Path(path)
    files = [path]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    elif path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
    elif path.suffix == ".onnx":
        files += [p for p in path.parent.glob(path.name + ".data")]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
