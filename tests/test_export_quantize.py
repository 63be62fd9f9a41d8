"""FP16 and INT8 ONNX exports (ONNX Runtime x86 recipe and TensorRT's Q/DQ rules), and calibration."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _export_fixtures import CALIB_SIZE, assert_close_to_reference


def _export(checkpoint: Path, image_dir: Path, out: Path, target: str, precision: str):
    from glia_edge.export import export

    return export(checkpoint, target=target, precision=precision, calib=image_dir, calib_size=CALIB_SIZE,
                  val=image_dir, output=out, max_drop=0.01)


@pytest.fixture(scope="module")
def exports(tiny_checkpoint: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("quant")
    return {
        "onnx-fp16": _export(tiny_checkpoint, image_dir, root / "m.fp16.onnx", "onnx", "fp16"),
        "onnx-int8": _export(tiny_checkpoint, image_dir, root / "m.int8.onnx", "onnx", "int8"),
        "trt-int8": _export(tiny_checkpoint, image_dir, root / "m.int8.trt", "trt", "int8"),
        "trt-fp16": _export(tiny_checkpoint, image_dir, root / "m.fp16.trt", "trt", "fp16"),
    }


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


@pytest.mark.parametrize("key", ["onnx-fp16", "onnx-int8", "trt-int8", "trt-fp16"])
def test_keeps_spearman_with_pytorch(exports: dict, key: str, tiny_checkpoint: Path, image_dir: Path) -> None:
    result = exports[key]
    assert result.gate_report.spearman >= 0.99 and result.gate_report.images == 20
    assert_close_to_reference(result.path, tiny_checkpoint, image_dir, fp32=False)


def test_fp16_keeps_io_float_and_layernorm_softmax_in_fp32(exports: dict) -> None:
    import onnx
    from onnx import TensorProto

    proto = onnx.shape_inference.infer_shapes(_load(exports["onnx-fp16"].path))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    init_types = {t.name: t.data_type for t in proto.graph.initializer}
    fp32_ops = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax", "ReduceMean")]
    assert len(fp32_ops) > 10
    for node in fp32_ops:
        for name in node.input:
            if name:
                assert types.get(name, init_types.get(name)) == TensorProto.FLOAT, (node.name, name)
    assert sum(t.data_type == TensorProto.FLOAT16 for t in proto.graph.initializer) > 10  # the weights are fp16
    assert exports["onnx-fp16"].meta.precision == "fp16"


def _dq_consumers(proto, *, weights_only: bool = False) -> set[str]:
    """Op types reading a DequantizeLinear output (only DQs of constant weights with ``weights_only``)."""
    inits = {t.name for t in proto.graph.initializer}
    dq_out = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"
              and (not weights_only or n.input[0] in inits)}
    return {n.op_type for n in proto.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq_out for i in n.input)}


def test_int8_quantizes_only_matmul_gemm_conv_u8s8_per_channel(exports: dict) -> None:
    from onnx import TensorProto, numpy_helper

    proto = _load(exports["onnx-int8"].path)
    # Q/DQ sit only on the inputs of MatMul / Gemm / Conv: LayerNorm, Softmax, GELU stay float.
    assert _dq_consumers(proto) == _dq_consumers(proto, weights_only=True) == {"MatMul", "Gemm", "Conv"}
    dq_out = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert sum(n.op_type == "MatMul" and n.input[0] in dq_out for n in proto.graph.node) >= 20
    inits = {t.name: t for t in proto.graph.initializer}
    q_zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert q_zero_points and all(z.data_type == TensorProto.UINT8 for z in q_zero_points)  # U8 activations
    weight_scales = [numpy_helper.to_array(inits[n.input[1]]) for n in proto.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == TensorProto.INT8]
    assert weight_scales and sum(s.size > 1 for s in weight_scales) >= 20  # per-channel (S8 weights)
    meta = exports["onnx-int8"].meta
    assert meta.calibration_sha256 and meta.export["quantization"]["activations"] == "uint8"
    assert meta.export["calibration"]["crops"] == CALIB_SIZE


def test_trt_int8_qdq_follows_tensorrt_rules(exports: dict) -> None:
    from onnx import TensorProto, numpy_helper

    from glia_edge.export import check_trt_qdq

    result = exports["trt-int8"]
    assert result.path.name == "model.trt.onnx"
    proto = _load(result.path)
    assert check_trt_qdq(proto) == []
    inits = {t.name: t for t in proto.graph.initializer}
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert all(z.data_type == TensorProto.INT8 and not numpy_helper.to_array(z).any() for z in zero_points)
    assert not any(t.data_type == TensorProto.INT32 for t in proto.graph.initializer)  # biases stay float
    # Q/DQ only on the inputs of MatMul / Gemm / Conv, where TensorRT fuses them into int8 kernels.
    assert _dq_consumers(proto) == {"MatMul", "Gemm", "Conv"}
    assert result.meta.export["target"] == "trt" and result.meta.export["quantization"]["activation_symmetric"]


def test_trt_checker_rejects_the_x86_u8s8_model(exports: dict) -> None:
    from glia_edge.export import check_trt_qdq

    problems = check_trt_qdq(exports["onnx-int8"].path)
    assert problems and any("uint8" in p for p in problems)
    assert any("INT32" in p for p in problems)  # ORT's default quantizes biases to int32


def test_trt_checker_rejects_float_model_and_per_tensor_weights(exports: dict, tmp_path: Path) -> None:
    from onnx import numpy_helper

    from glia_edge.export import check_trt_qdq

    assert any("no QuantizeLinear" in p for p in check_trt_qdq(_load(exports["trt-fp16"].path)))
    proto = _load(exports["trt-int8"].path)
    inits = {t.name: t for t in proto.graph.initializer}
    dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and numpy_helper.to_array(inits[n.input[1]]).size > 1)
    scale = inits[dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale)[:1].copy(), scale.name))
    assert any("per-channel" in p for p in check_trt_qdq(proto))


def test_trt_export_says_why_no_engine(exports: dict) -> None:
    from glia_edge.export import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("tensorrt and a GPU are present: the engine is built instead")
    result = exports["trt-int8"]
    assert [p.name for p in result.files] == ["model.trt.onnx", "model.trt.onnx.json"]
    (note,) = result.notes
    assert "No TensorRT engine was built" in note and reason in note
    assert f"glia-edge build-engine {result.path} --precision int8" in note


def test_fp16_trt_onnx_is_the_fp16_cast_graph(exports: dict) -> None:
    from onnx import TensorProto

    proto = _load(exports["trt-fp16"].path)
    assert any(t.data_type == TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert any(n.op_type == "Cast" for n in proto.graph.node)
    assert exports["trt-fp16"].meta.precision == "fp16"


# -- calibration -------------------------------------------------------------------------------
def _preprocess(checkpoint: Path):
    from glia_edge.checkpoint import read_checkpoint_meta

    return read_checkpoint_meta(checkpoint).preprocess_config


def test_calibration_set_is_reiterable_and_hashed(tiny_checkpoint: Path, image_dir: Path) -> None:
    from glia_edge.export import CalibrationSet

    cfg = _preprocess(tiny_checkpoint)
    calib = CalibrationSet.from_path(image_dir, cfg, size=6, crops=1)
    first = np.concatenate(list(calib.batches(4)))
    second = np.concatenate(list(calib))
    assert first.shape == (6, 3, 224, 224) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert 0.0 <= first.min() and first.max() <= 1.0
    again = CalibrationSet.from_path(image_dir, cfg, size=6, crops=1)
    assert calib.sha256 == again.sha256 and len(calib.sha256) == 64
    assert CalibrationSet.from_path(image_dir, cfg, size=6, crops=5).sha256 != calib.sha256
    assert len(CalibrationSet.from_path(image_dir, cfg, size=6, crops=5)) == 30
    padded = list(calib.batches(4, pad_to=4))
    assert [len(b) for b in padded] == [4, 4]


def test_calibration_adapters_start_fresh_each_time(tiny_checkpoint: Path, image_dir: Path) -> None:
    from glia_edge.export import CalibrationSet

    calib = CalibrationSet.from_path(image_dir, _preprocess(tiny_checkpoint), size=5)
    for _ in range(2):
        reader = calib.ort_reader("images", batch_size=2)
        batches = []
        while (item := reader.get_next()) is not None:
            batches.append(item["images"])
        assert [len(b) for b in batches] == [2, 2, 2]  # the last one padded to the fixed batch
    dataset = calib.nncf_dataset()
    assert len(list(dataset.get_inference_data())) == len(list(dataset.get_inference_data())) == 5


def test_calibration_from_csv_with_labels_and_bad_rows(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path) -> None:
    from glia_edge import CalibrationError
    from glia_edge.export import CalibrationSet, read_image_list

    names = sorted(p.name for p in image_dir.glob("*.jpg"))[:4]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    rows = [f"{image_dir / n},{i * 10}" for i, n in enumerate(names)] + [f"{tmp_path / 'broken.jpg'},5"]
    (tmp_path / "set.csv").write_text("path,MOS\n" + "\n".join(rows) + "\n")
    listed = read_image_list(tmp_path / "set.csv")
    assert listed.labels == (0.0, 10.0, 20.0, 30.0, 5.0) and len(listed) == 5
    calib = CalibrationSet.from_path(tmp_path / "set.csv", _preprocess(tiny_checkpoint))
    assert len(calib) == 4  # the unreadable file is skipped with a warning
    (tmp_path / "nopath.csv").write_text("name,score\na.jpg,1\n")
    with pytest.raises(CalibrationError, match="no image column"):
        read_image_list(tmp_path / "nopath.csv")
    with pytest.raises(CalibrationError, match="not found"):
        read_image_list(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no images"):
        read_image_list(tmp_path / "empty")


def test_int8_without_calibration_is_a_clear_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from glia_edge import CalibrationError
    from glia_edge.export import export

    with pytest.raises(CalibrationError, match="--calib"):
        export(tiny_checkpoint, target="onnx", precision="int8", output=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
