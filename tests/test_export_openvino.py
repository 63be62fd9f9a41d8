"""OpenVINO IR exports: FP32 parity, FP16 / BF16 / INT8 (NNCF) rank agreement, rt_info metadata."""
from __future__ import annotations

from pathlib import Path

import pytest

from _export_fixtures import CALIB_SIZE, assert_close_to_reference

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@pytest.fixture(scope="module")
def ir_exports(tiny_checkpoint: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from glia_edge.export import export

    root = tmp_path_factory.mktemp("openvino")
    return {p: export(tiny_checkpoint, target="openvino", precision=p, calib=image_dir, calib_size=CALIB_SIZE,
                      val=image_dir, output=root / f"m.{p}") for p in PRECISIONS}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ir_scores_like_pytorch(ir_exports: dict, precision: str, tiny_checkpoint: Path, image_dir: Path) -> None:
    result = ir_exports[precision]
    assert result.path.name == "model.xml" and result.path.with_suffix(".bin").is_file()
    assert_close_to_reference(result.path, tiny_checkpoint, image_dir, fp32=precision == "fp32")
    # The folder itself opens too (glia_edge.load accepts an IR folder).
    assert_close_to_reference(result.path.parent, tiny_checkpoint, image_dir, fp32=precision == "fp32")
    assert result.gate_report.spearman >= 0.99


def test_rt_info_metadata_round_trips(ir_exports: dict, tiny_checkpoint: Path) -> None:
    from glia_edge.meta import sha256_file
    from glia_edge.runtimes import read_meta

    for precision, result in ir_exports.items():
        meta = read_meta(result.path)
        assert meta.to_dict() == result.meta.to_dict()
        assert meta.format == "openvino" and meta.precision == precision
        assert meta.source_checkpoint_sha256 == sha256_file(tiny_checkpoint)
        assert "openvino" in meta.tools
    int8 = read_meta(ir_exports["int8"].path)
    assert int8.calibration_sha256 and int8.export["quantization"]["smooth_quant_alpha"] == 0.15
    assert int8.export["quantization"]["keep_head_float"] is True
    assert int8.export["quantization"]["keep_local_stem_float"] is True


def test_int8_keeps_the_local_streams_first_convolution_float(ir_exports: dict) -> None:
    from glia_edge.ov_core import shared_core

    model = shared_core().read_model(str(ir_exports["int8"].path))
    inputs = {op.get_friendly_name(): [op.input_value(i).get_node().get_type_name() for i in range(2)]
              for op in model.get_ops() if op.get_type_name() == "Convolution"}
    stem = [k for k in inputs if "/local/stem/stem.0/" in k]
    assert len(stem) == 1 and "FakeQuantize" not in inputs[stem[0]] and inputs[stem[0]][1] == "Constant"
    assert "FakeQuantize" in inputs[next(k for k in inputs if "/local/stem/stem.1/" in k)]  # the rest is INT8


def test_weights_are_compressed_for_fp16_and_int8(ir_exports: dict) -> None:
    size = {p: r.path.with_suffix(".bin").stat().st_size for p, r in ir_exports.items()}
    assert size["fp16"] < 0.6 * size["fp32"]
    assert size["int8"] < 0.6 * size["fp32"]


def _fed_by_fake_quantize(model: object) -> dict[str, str]:
    """Friendly name -> type of every op with a FakeQuantize among its inputs."""
    return {target.get_node().get_friendly_name(): target.get_node().get_type_name()
            for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
            for target in op.output(0).get_target_inputs()}


def _attention_ops(model: object) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "ScaledDotProductAttention"]


def test_int8_ir_holds_fake_quantize_and_keeps_head_and_attention_float(ir_exports: dict) -> None:
    from glia_edge.ov_core import shared_core

    model = shared_core().read_model(str(ir_exports["int8"].path))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) > 10
    fed_by_fq = _fed_by_fake_quantize(model)
    assert any("/blocks." in name for name in fed_by_fq)  # the backbone's MatMuls are quantized
    assert not any("/head/" in name for name in fed_by_fq)  # the score head is not
    # The fused attention keeps float inputs (quantized Q/K break the CPU plugin's fused kernel).
    assert _attention_ops(model) and "ScaledDotProductAttention" not in fed_by_fq.values()
    assert ir_exports["int8"].meta.export["quantization"]["keep_attention_float"] is True


def test_smooth_quant_off_quantized_head_and_attention_are_options(tiny_checkpoint: Path, image_dir: Path,
                                                                   tmp_path: Path) -> None:
    from glia_edge.export.calibration import CalibrationSet
    from glia_edge.export.onnx import torch_to_onnx
    from glia_edge.export.openvino import OpenVinoOptions, onnx_to_openvino
    from glia_edge.checkpoint import load_checkpoint
    from glia_edge.ov_core import shared_core

    model, meta = load_checkpoint(tiny_checkpoint)
    onnx_path = torch_to_onnx(model, tmp_path / "m.onnx", crop_size=224)
    calib = CalibrationSet.from_path(image_dir, meta.preprocess_config, size=4)
    xml = onnx_to_openvino(onnx_path, tmp_path / "m.xml", precision="int8", calib=calib,
                           options=OpenVinoOptions(smooth_quant_alpha=None, keep_head_float=False,
                                                   keep_attention_float=False))
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    model = shared_core().read_model(str(xml))
    fed_by_fq = _fed_by_fake_quantize(model)
    assert any("/head/" in name for name in fed_by_fq)
    quantized_attention = [n for n in _attention_ops(model) if n in fed_by_fq]
    assert quantized_attention and len(quantized_attention) == len(_attention_ops(model))


def test_exported_irs_keep_their_reductions_dims(ir_exports: dict) -> None:
    """No ``keep_dims=False`` reduction reaches the IR (the CPU plugin miscompiled one fused with a
    FakeQuantize under a static batch: tests/test_openvino_batch.py)."""
    from glia_edge.ov_core import shared_core

    for result in ir_exports.values():
        model = shared_core().read_model(str(result.path))
        reductions = [op for op in model.get_ops() if op.get_type_name().startswith("Reduce")]
        assert reductions and all(op.get_attributes()["keep_dims"] for op in reductions)
