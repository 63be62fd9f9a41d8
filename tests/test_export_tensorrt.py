"""TensorRT engine builds (GPU machines only) and the clear errors everywhere else."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _export_fixtures import CALIB_SIZE, assert_close_to_reference


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

    with pytest.raises(BackendUnavailableError, match="TensorRT") as err:
        onnx_to_engine(tmp_path / "model.trt.onnx", tmp_path / "model.engine", precision="fp16")
    assert str(err.value) == NO_TRT
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(NO_TRT is None, reason="tensorrt and a GPU are present")
def test_requiring_an_engine_fails_cleanly_without_tensorrt(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from glia_edge import BackendUnavailableError
    from glia_edge.export import export

    with pytest.raises(BackendUnavailableError):
        export(tiny_checkpoint, target="trt", precision="fp32", output=tmp_path / "m.trt", build_engine=True)
    assert list(tmp_path.iterdir()) == []


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
    assert names == ["model.engine", "model.engine.json", "model.trt.onnx"]
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
