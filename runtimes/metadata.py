"""Where each artifact format keeps its :class:`ArtifactMeta`, read and written in one place.

- checkpoint (.safetensors): the safetensors header, key ``glia_edge``;
- ONNX: ``metadata_props`` entry ``glia_edge``;
- OpenVINO IR: ``rt_info`` entry ``glia_edge``;
- TensorRT engine: a sidecar ``<engine>.json`` (the engine file stays plain for trtexec,
  Triton and DeepStream).
No torch is imported here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glia_edge.errors import UnsupportedArtifactError
from glia_edge.formats import format_of
from glia_edge.meta import META_KEY, ArtifactMeta


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def _safetensors_header(path: Path) -> dict[str, str]:
    # The header is 8 bytes of little-endian length followed by JSON; read it without torch.
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if size <= 0 or size > 100_000_000:
            raise UnsupportedArtifactError(f"{path}: not a safetensors file")
        header = json.loads(fh.read(size))
    return header.get("__metadata__", {}) or {}


def set_onnx_meta(model: Any, meta: ArtifactMeta) -> None:
    """Store ``meta`` in an ``onnx.ModelProto``'s metadata_props (replacing an older entry)."""
    props = {p.key: p.value for p in model.metadata_props}
    props[META_KEY] = meta.to_json()
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_meta_from_props(props: dict[str, str], path: Path) -> ArtifactMeta:
    if META_KEY not in props:
        raise UnsupportedArtifactError(f"{path}: ONNX model has no glia-edge metadata (not exported by glia-edge)")
    return ArtifactMeta.from_json(props[META_KEY])


def _read_onnx(path: Path) -> ArtifactMeta:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the props are read
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        props = dict(session.get_modelmeta().custom_metadata_map)
    except ImportError:
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return onnx_meta_from_props(props, path)


def openvino_meta_from_model(model: Any, path: Path) -> ArtifactMeta:
    if not model.has_rt_info([META_KEY]):
        raise UnsupportedArtifactError(f"{path}: OpenVINO IR has no glia-edge metadata in rt_info")
    return ArtifactMeta.from_json(model.get_rt_info([META_KEY]).astype(str))


def _read_openvino(path: Path) -> ArtifactMeta:
    import openvino as ov

    return openvino_meta_from_model(ov.Core().read_model(str(path)), path)


def read_engine_sidecar(path: Path) -> ArtifactMeta:
    side = sidecar_path(path)
    if not side.is_file():
        raise UnsupportedArtifactError(f"{path}: TensorRT engine has no metadata sidecar {side.name}")
    return ArtifactMeta.from_json(side.read_text())


def resolve_ir(path: str | Path) -> Path:
    """An OpenVINO IR folder -> its single .xml file; other paths unchanged."""
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise UnsupportedArtifactError(f"{path}: expected one .xml in the IR folder, found {len(xmls)}")
        return xmls[0]
    return path


def read_meta(path: str | Path) -> ArtifactMeta:
    """The metadata of any glia-edge artifact, without loading its weights into a runtime."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"artifact not found: {path}")
    fmt = format_of(path).name
    if fmt == "torch":
        header = _safetensors_header(path)
        if META_KEY not in header:
            raise UnsupportedArtifactError(f"{path}: safetensors file has no glia-edge config in its header")
        return ArtifactMeta.from_json(header[META_KEY])
    if fmt == "onnx":
        return _read_onnx(path)
    if fmt == "openvino":
        return _read_openvino(resolve_ir(path))
    return read_engine_sidecar(path)
