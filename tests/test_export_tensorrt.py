"""TensorRT engine builds (GPU machines only) and the clear errors everywhere else."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _export_fixtures import CALIB_SIZE, artifact_scores, assert_close_to_reference, reference_scores, spearman


def _reason() -> str | None:
    from glia_edge.export import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


NO_TRT = _reason()
needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(NO_TRT is not None, reason=f"no TensorRT engine build here: {NO_TRT}")]


def test_engine_options_are_validated() -> None:
    from glia_edge.export import EngineOptions

    assert EngineOptions(1, 4, 16).opt_batch == 4
    with pytest.raises(ValueError, match="min_batch"):
        EngineOptions(min_batch=8, opt_batch=4, max_batch=16)


@pytest.mark.skipif(NO_TRT is None, reason="tensorrt and a GPU are present")
def test_onnx_to_engine_says_why_it_cannot_build(tmp_path: Path) -> None:
    from glia_edge import BackendUnavailableError
    from glia_edge.export import onnx_to_engine

    from glia_edge.runtimes.tensorrt import REASON_KINDS

    with pytest.raises(BackendUnavailableError) as err:
        onnx_to_engine(tmp_path / "model.trt.onnx", tmp_path / "model.engine", precision="fp16")
    assert str(err.value) == NO_TRT and err.value.kind in REASON_KINDS
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(NO_TRT is None, reason="tensorrt and a GPU are present")
def test_requiring_an_engine_fails_before_any_expensive_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge import BackendUnavailableError
    from glia_edge.export import export, onnx as onnx_pass
    from glia_edge.weights import default_checkpoint

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the probe must run before the PyTorch -> ONNX export")

    monkeypatch.setattr(onnx_pass, "torch_to_onnx", no_export)
    with pytest.raises(BackendUnavailableError) as err:
        export(default_checkpoint(), target="trt", precision="fp32", output=tmp_path / "m.trt", build_engine=True)
    assert str(err.value) == NO_TRT
    assert list(tmp_path.iterdir()) == []


def test_int8_qdq_on_the_fp16_graph_agrees_on_onnx_runtime(tiny_checkpoint: Path, image_dir: Path,
                                                           tmp_path: Path) -> None:
    """INT8 Q/DQ on the FP16 graph, run here on ONNX Runtime (CPU), against PyTorch FP32."""
    import onnx

    from glia_edge.export import check_trt_qdq, export
    from glia_edge.formats import read_meta

    result = export(tiny_checkpoint, target="trt", precision="int8", calib=image_dir, calib_size=CALIB_SIZE,
                    output=tmp_path / "m.trt", build_engine=False, int8_graph="fp16")
    onnx_path = tmp_path / "m.trt" / "model.trt.onnx"
    assert check_trt_qdq(onnx_path) == []
    graph = onnx.load(str(onnx_path)).graph
    fp16 = onnx.TensorProto.FLOAT16
    assert any(t.data_type == fp16 for t in graph.initializer)  # float weights (biases, norms of adds) in FP16
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types.get(n.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in norms)
    meta = read_meta(onnx_path)
    assert meta.precision == "int8" and meta.export["trt_int8_graph"] == "fp16" and result.meta.export["fp32_ops"]
    got, want = artifact_scores(onnx_path, image_dir), reference_scores(tiny_checkpoint, image_dir)
    delta = float(abs(got - want).max())
    assert spearman(got, want) >= 0.99
    assert delta <= 0.05 * meta.score_spec.range, delta  # within 5% of the score range on 20 images


@pytest.fixture(scope="module")
def engines(tiny_checkpoint: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if NO_TRT is not None:
        pytest.skip(f"no TensorRT engine build here: {NO_TRT}")
    from glia_edge.export import export

    root = tmp_path_factory.mktemp("trt")
    return {p: export(tiny_checkpoint, target="trt", precision=p, calib=image_dir, calib_size=CALIB_SIZE,
                      val=image_dir, output=root / f"m.{p}", build_engine=True, max_batch=8,
                      timing_cache=root / "timing.cache") for p in ("fp32", "fp16", "int8")}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.gpu
@pytest.mark.skipif(NO_TRT is not None, reason=f"no TensorRT engine build here: {NO_TRT}")
def test_engine_builds_loads_and_scores(engines: dict, precision: str, tiny_checkpoint: Path,
                                        image_dir: Path) -> None:
    from glia_edge.runtimes import read_meta

    result = engines[precision]
    assert result.path.name == "model.engine" and result.notes == ()
    names = sorted(p.name for p in result.files)
    assert names == ["model.engine", "model.engine.json", "model.trt.onnx", "model.trt.onnx.json"]
    engine_bytes = result.path.read_bytes()
    assert not engine_bytes.lstrip().startswith(b"{")  # plain engine: metadata lives in the sidecar
    sidecar = json.loads((result.path.parent / "model.engine.json").read_text())
    meta = read_meta(result.path)
    assert sidecar["precision"] == meta.precision == precision and meta.format == "trt"
    assert meta.export["engine"]["max_batch"] == 8
    # FP32 engines are built with TF32 off, so they match PyTorch like the other FP32 artifacts.
    assert_close_to_reference(result.path, tiny_checkpoint, image_dir, fp32=precision == "fp32")


@pytest.mark.gpu
@pytest.mark.skipif(NO_TRT is not None, reason=f"no TensorRT engine build here: {NO_TRT}")
def test_timing_cache_is_written_and_reused(engines: dict, tmp_path: Path) -> None:
    from glia_edge.export import EngineOptions, onnx_to_engine

    cache = engines["fp16"].path.parent.parent / "timing.cache"
    assert cache.is_file() and cache.stat().st_size > 0
    onnx = engines["fp16"].path.parent / "model.trt.onnx"
    out = onnx_to_engine(onnx, tmp_path / "again.engine", precision="fp16",
                         options=EngineOptions(max_batch=8, timing_cache=cache))
    assert out.stat().st_size > 0
