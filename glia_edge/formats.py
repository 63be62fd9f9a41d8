"""The artifact formats, one row each: what ``export`` writes, where the metadata lives, what loads it.

Every part of glia-edge that needs to know about a format reads this table: the exporter picks
the row's writer, ``glia_edge.load`` the row's backend, ``read_meta`` the row's metadata reader,
the benchmark the row's label and precisions, the CLI the row's names. Adding a format is one
row here, one writer in ``glia_edge.export.writers`` and one backend in ``glia_edge.runtimes``
(see docs/extending.md). Rows are looked up by name, never by position. No torch is imported.

Where each format keeps its :class:`ArtifactMeta` JSON (key ``glia_edge``):

- checkpoint (``.safetensors``): the safetensors header;
- ONNX: ``metadata_props``;
- OpenVINO IR: ``rt_info``;
- TensorRT engine: a sidecar ``<engine>.json`` (engine files stay plain so trtexec, Triton and
  DeepStream read them).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from glia_edge.atomic import atomic_write
from glia_edge.errors import GliaError, UnsupportedArtifactError, one_line
from glia_edge.meta import META_KEY, ArtifactMeta


# -- metadata: read and written in one place per format ----------------------------------------
def _meta_from_json(text: str, path: Path) -> ArtifactMeta:
    """Parse an artifact's metadata and check the settings every backend builds on, so a corrupt or
    edited entry is refused at load, naming the artifact, not at the first image."""
    missing: list[str] = []
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = _missing_fields(data)
        if not missing:
            meta = ArtifactMeta.from_dict(data)
            _ = (meta.preprocess_config, meta.score_spec)  # built for their checks
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UnsupportedArtifactError(f"{path}: glia-edge metadata unreadable: {one_line(exc)}") from None
    if missing:  # a hand-written or cut sidecar: name the fields, not the constructor's TypeError
        raise UnsupportedArtifactError(f"{path}: glia-edge metadata lacks {', '.join(missing)}")
    return meta


def _missing_fields(data: dict[str, Any]) -> list[str]:
    """The fields of :class:`ArtifactMeta` without a default that ``data`` lacks."""
    return [f.name for f in fields(ArtifactMeta)
            if f.default is MISSING and f.default_factory is MISSING and f.name not in data]


#: The safetensors header is 8 bytes of little-endian length followed by that much JSON.
_SAFETENSORS_PREFIX = 8


def _read_safetensors_meta(path: Path) -> ArtifactMeta:
    # Read the header without torch, and check the file holds the tensor data it declares (as
    # safetensors does at load), so a truncated checkpoint is refused here, not at the first score.
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(_SAFETENSORS_PREFIX), "little")
        if size <= 0 or size > 100_000_000:
            raise UnsupportedArtifactError(f"{path}: not a safetensors file")
        if _SAFETENSORS_PREFIX + size > file_size:
            raise UnsupportedArtifactError(f"{path}: truncated safetensors file (its header alone needs "
                                           f"{_SAFETENSORS_PREFIX + size} bytes, the file has {file_size})")
        header = json.loads(fh.read(size))
    _check_safetensors_data(path, header, file_size - _SAFETENSORS_PREFIX - size)
    props = header.get("__metadata__", {}) or {}
    if META_KEY not in props:
        raise UnsupportedArtifactError(f"{path}: safetensors file has no glia-edge config in its header")
    return _meta_from_json(props[META_KEY], path)


def _check_safetensors_data(path: Path, header: dict[str, Any], data_bytes: int) -> None:
    """The tensors' ``data_offsets`` must end exactly where the file does (safetensors refuses a
    file they do not fully cover)."""
    try:
        declared = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        raise UnsupportedArtifactError(f"{path}: safetensors header has malformed tensor entries") from None
    if declared > data_bytes:
        raise UnsupportedArtifactError(f"{path}: truncated safetensors file (its header declares {declared} "
                                       f"bytes of tensor data, the file holds {data_bytes})")
    if declared < data_bytes:
        raise UnsupportedArtifactError(f"{path}: not a valid safetensors file ({data_bytes - declared} bytes "
                                       "after the tensor data its header declares)")


def safetensors_metadata(meta: ArtifactMeta) -> dict[str, str]:
    """The ``metadata`` argument of ``safetensors.save_file`` for a checkpoint."""
    return {META_KEY: meta.to_json()}


def set_onnx_meta(model: Any, meta: ArtifactMeta) -> None:
    """Store ``meta`` in an ``onnx.ModelProto``'s metadata_props (replacing an older entry)."""
    props = {p.key: p.value for p in model.metadata_props}
    props[META_KEY] = meta.to_json()
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_meta_from_props(props: dict[str, str], path: Path) -> ArtifactMeta:
    """The metadata in an ONNX model's props (as ONNX Runtime's ``custom_metadata_map`` gives them)."""
    if META_KEY not in props:
        raise UnsupportedArtifactError(f"{path}: ONNX model has no glia-edge metadata (not exported by glia-edge)")
    return _meta_from_json(props[META_KEY], path)


def _read_onnx_meta(path: Path) -> ArtifactMeta:
    # Read the props without loading the weights into a runtime: onnx where it is installed (the
    # export and TensorRT extras), else ONNX Runtime with optimisation off (a camera box).
    try:
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except ImportError:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            if sidecar_path(path).is_file():  # a TensorRT-ready ONNX on a device with only TensorRT
                return read_sidecar(path)
            raise UnsupportedArtifactError(f"{path}: reading ONNX metadata needs onnx or onnxruntime: "
                                           "pip install 'glia-edge[onnxruntime]'") from exc
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        props = dict(session.get_modelmeta().custom_metadata_map)
    return onnx_meta_from_props(props, path)


def set_openvino_meta(model: Any, meta: ArtifactMeta) -> None:
    """Store ``meta`` in an ``openvino.Model``'s rt_info (saved with the IR)."""
    model.set_rt_info(meta.to_json(), [META_KEY])


def openvino_meta_from_model(model: Any, path: Path) -> ArtifactMeta:
    """The metadata of a model OpenVINO read: an IR's rt_info, or an ONNX model's metadata_props
    (which OpenVINO's ONNX reader puts under rt_info ``framework``)."""
    for key in ([META_KEY], ["framework", META_KEY]):
        if model.has_rt_info(key):
            return _meta_from_json(model.get_rt_info(key).astype(str), path)
    kind = "ONNX model" if Path(path).suffix.lower() == ".onnx" else "OpenVINO IR"
    raise UnsupportedArtifactError(f"{path}: {kind} has no glia-edge metadata (not exported by glia-edge)")


def _read_openvino_meta(path: Path) -> ArtifactMeta:
    from glia_edge.ov_core import shared_core

    try:
        core = shared_core()
    except ImportError as exc:
        raise UnsupportedArtifactError(f"{path}: reading an OpenVINO IR needs openvino: "
                                       "pip install 'glia-edge[openvino]'") from exc
    xml = resolve_ir(path)
    return openvino_meta_from_model(core.read_model(str(xml)), xml)


def sidecar_path(path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (also ``model.trt.onnx`` -> ``model.trt.onnx.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | Path, meta: ArtifactMeta) -> Path:
    """Write ``meta`` as ``<path>.json``, atomically (the engine file itself stays plain)."""
    side = sidecar_path(path)
    atomic_write(side, lambda tmp: tmp.write_text(json.dumps(meta.to_dict(), indent=2)))
    return side


def read_sidecar(path: Path) -> ArtifactMeta:
    side = sidecar_path(path)
    if not side.is_file():
        raise UnsupportedArtifactError(f"{path}: TensorRT engine has no metadata sidecar {side.name}")
    return _meta_from_json(side.read_text(), side)


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactFormat:
    """One artifact format.

    ``name`` is at once the export target, ``ArtifactMeta.format`` and the benchmark's target.
    ``writer`` (``module:function``) turns the FP32 ONNX into this format inside the export's
    staging folder; ``None`` for checkpoints, which training writes. ``loadable`` is the file the
    writer leaves there for ``load`` to open; ``single_file`` formats are that file alone (the
    export's output is the file), the others a folder holding it beside its companions.
    """

    name: str
    label: str
    suffixes: tuple[str, ...]
    precisions: tuple[str, ...]  # what an artifact can hold, in the bench's row order
    backend: str  # "module:Class", imported lazily so a camera box needs only its own runtime
    writer: str | None
    loadable: str
    single_file: bool
    read_meta: Callable[[Path], ArtifactMeta]
    needs_gpu: bool  # the bench reports its rows as skipped on a machine without a GPU
    description: str  # one phrase: what the artifact is (export's --target help lists it)


FORMATS: dict[str, ArtifactFormat] = {f.name: f for f in (
    ArtifactFormat("torch", "PyTorch", (".safetensors",), ("fp32",),
                   "glia_edge.runtimes.torch:TorchBackend", None, "model.safetensors", True,
                   _read_safetensors_meta, False, "PyTorch checkpoint (reference)"),
    ArtifactFormat("onnx", "ONNX Runtime", (".onnx",), ("fp32", "fp16", "int8"),
                   "glia_edge.runtimes.onnxruntime:OnnxRuntimeBackend", "glia_edge.export.writers:write_onnx",
                   "model.onnx", True, _read_onnx_meta, False, "ONNX model run by ONNX Runtime"),
    ArtifactFormat("openvino", "OpenVINO", (".xml",), ("fp32", "bf16", "fp16", "int8"),
                   "glia_edge.runtimes.openvino:OpenVinoBackend", "glia_edge.export.writers:write_openvino",
                   "model.xml", False, _read_openvino_meta, False, "OpenVINO IR (.xml + .bin)"),
    ArtifactFormat("trt", "TensorRT", (".engine", ".plan"), ("fp32", "fp16", "int8"),
                   "glia_edge.runtimes.tensorrt:TensorRtBackend", "glia_edge.export.writers:write_trt",
                   "model.engine", False, read_sidecar, True, "TensorRT engine with a sidecar .json"),
)}

#: Every precision some format holds, in the table's order: fp32, fp16, int8, bf16.
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(p for fmt in FORMATS.values() for p in fmt.precisions))

#: Formats ``glia-edge export`` can write.
EXPORT_TARGETS: tuple[str, ...] = tuple(name for name, f in FORMATS.items() if f.writer)


def get_format(name: str) -> ArtifactFormat:
    """The row called ``name``; a clear error naming the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown artifact format {name!r}; known: {', '.join(FORMATS)}") from None


def check_precision(name: str, precision: str) -> None:
    """Raise ``ValueError`` unless format ``name`` can hold ``precision``."""
    fmt = get_format(name)
    if precision not in fmt.precisions:
        raise ValueError(f"{fmt.name} artifacts are {', '.join(fmt.precisions)}, not {precision!r}")


def resolve_ir(path: str | Path) -> Path:
    """An OpenVINO IR folder -> its single .xml file; other paths unchanged."""
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise UnsupportedArtifactError(f"{path}: expected one .xml in the IR folder, found {len(xmls)}")
        return xmls[0]
    return path


def format_of(path: str | Path) -> ArtifactFormat:
    """The format an artifact path is in, from its suffix (an IR folder counts as OpenVINO)."""
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*.xml")):
            return FORMATS["openvino"]
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in {s for f in FORMATS.values()
                                                                                 for s in f.suffixes})
        hint = f"; open a file in it ({', '.join(inside)})" if inside else ""  # e.g. a TensorRT export folder
        raise UnsupportedArtifactError(f"{path}: folder holds no OpenVINO .xml model{hint}")
    suffix = path.suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise UnsupportedArtifactError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected one of {known}")


def loadable_path(output: str | Path, name: str) -> Path:
    """What ``load`` opens in an export's ``output``: the file itself, or the row's file in the folder."""
    fmt, output = get_format(name), Path(output)
    return output if fmt.single_file else output / fmt.loadable


def read_meta(path: str | Path) -> ArtifactMeta:
    """The metadata of any glia-edge artifact, without loading its weights into a runtime."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"artifact not found: {path}")
    fmt = format_of(path)
    if path.is_file() and path.stat().st_size == 0:
        raise UnsupportedArtifactError(f"{path}: empty file (0 bytes)")
    try:
        return fmt.read_meta(path)
    except (GliaError, FileNotFoundError):
        raise
    except Exception as exc:  # the format's own parser on a corrupt or truncated file
        raise UnsupportedArtifactError(f"{path}: cannot read it as {fmt.label}: {one_line(exc)}") from exc


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
