"""ONNX export: graph contract, FP32 parity with PyTorch, metadata, fusion counts, atomicity, the gate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _export_fixtures import CALIB_SIZE, assert_close_to_reference, images_of, reference_scores
from conftest import TINY_MODEL


@pytest.fixture(scope="module")
def fp32_export(tiny_checkpoint: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from glia_edge.export import export

    out = tmp_path_factory.mktemp("onnx") / "tiny.fp32.onnx"
    return export(tiny_checkpoint, target="onnx", precision="fp32", calib=image_dir, calib_size=CALIB_SIZE,
                  val=image_dir, output=out, max_drop=0.001)


def test_fp32_matches_pytorch_within_1e4_of_range(fp32_export, tiny_checkpoint: Path, image_dir: Path) -> None:
    assert fp32_export.path.is_file() and fp32_export.path.suffix == ".onnx"
    assert_close_to_reference(fp32_export.path, tiny_checkpoint, image_dir, fp32=True)


def test_gate_report_agrees_with_direct_scoring(fp32_export) -> None:
    gate = fp32_export.gate_report
    assert gate.images == 20 and gate.failed_images == 0
    assert gate.spearman > 0.9999 and gate.drop < 0.001
    assert gate.max_rel_delta <= 1e-4
    assert gate.srcc_artifact is None  # a folder carries no labels


def test_graph_contract(fp32_export) -> None:
    import onnx

    proto = onnx.load(str(fp32_export.path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "images" and out.name == "scores"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops = {n.op_type for n in proto.graph.node}
    assert "LayerNormalization" in ops  # opset 17 keeps LayerNorm as one op
    assert not any(n.domain not in ("", "ai.onnx") for n in proto.graph.node)  # standard ops only


def test_dynamic_batch_runs_at_any_size(fp32_export, tiny_checkpoint: Path) -> None:
    import onnxruntime as ort
    import torch

    from glia_edge.checkpoint import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    session = ort.InferenceSession(str(fp32_export.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.random((batch, 3, 224, 224), dtype=np.float32)
        got = session.run(None, {"images": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (batch,)
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_metadata_round_trips(fp32_export, tiny_checkpoint: Path) -> None:
    from glia_edge.meta import sha256_file
    from glia_edge.runtimes import read_meta

    meta = read_meta(fp32_export.path)
    assert meta.to_dict() == fp32_export.meta.to_dict()
    assert meta.format == "onnx" and meta.precision == "fp32" and meta.preset == "glia_vit_tiny"
    assert meta.source_checkpoint_sha256 == sha256_file(tiny_checkpoint)
    assert meta.calibration_sha256 is None  # fp32 uses no calibration
    assert meta.export["exporter"] == "legacy" and meta.export["opset"] == 17 and meta.export["dynamic"]
    assert {"onnx", "onnxruntime", "onnxslim", "torch"} <= set(meta.tools)
    assert meta.score_spec.range == 100.0


def test_fusion_counts_on_tiny_model(fp32_export) -> None:
    """ORT's fusions on the 2-block GLIA: a change in these numbers is a regression to look at.

    17 LayerNorms (2 blocks x 2, final norm, 2 adapters x 5, local stream, head), 3 GELUs
    (2 MLPs + head); the SDPA-style ViT attention and the adapters' cross-attention are not
    matched by ORT's attention fusion (pitfall 9), so attention stays MatMul/Softmax.
    """
    from glia_edge.export.fusion import FusionReport

    report = FusionReport(**fp32_export.meta.export["fusions"])
    depth, adapters = TINY_MODEL["depth"], TINY_MODEL["depth"]
    assert report.layer_norms == 2 * depth + 1 + 5 * adapters + 1 + 1 == 17
    assert report.optimizer["SkipLayerNormalization"] == 7
    assert report.gelus == depth + 1
    assert report.attentions == 0
    # What ORT's CPU session runs: every LayerNorm fused, GELU fused.
    assert report.runtime["LayerNormalization"] + report.runtime.get("SkipLayerNormalization", 0) == 17
    assert report.runtime["Gelu"] == depth + 1


def test_dynamo_exporter_at_opset_18(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from glia_edge.checkpoint import load_checkpoint
    from glia_edge.export.onnx import OnnxOptions, torch_to_onnx

    model, _ = load_checkpoint(tiny_checkpoint)
    path = torch_to_onnx(model, tmp_path / "dyn.onnx", crop_size=224, options=OnnxOptions(exporter="dynamo"))
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((3, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"images": x})[0], model(torch.from_numpy(x)).numpy(), atol=1e-3)


def test_static_batch_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import onnx

    from glia_edge.checkpoint import load_checkpoint
    from glia_edge.export.onnx import OnnxOptions, torch_to_onnx

    model, _ = load_checkpoint(tiny_checkpoint)
    path = torch_to_onnx(model, tmp_path / "static.onnx", crop_size=224, options=OnnxOptions(dynamic=False, batch=2))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 224, 224]


@pytest.mark.parametrize("target,precision", [("onnx", "fp32"), ("openvino", "int8")])
def test_score_axis_gives_batch_by_one_scores_that_runtimes_read(tiny_checkpoint: Path, image_dir: Path,
                                                                  tmp_path: Path, target: str, precision: str) -> None:
    """``score_axis``: outputs (batch, 1) for nvinfer; same scores through glia_edge.load, recorded in metadata."""
    from glia_edge.export import export
    from glia_edge.ov_core import shared_core
    from glia_edge.runtimes import read_meta

    out = tmp_path / ("m.onnx" if target == "onnx" else "ov")
    result = export(tiny_checkpoint, target=target, precision=precision, output=out, score_axis=True,
                    calib=image_dir if precision == "int8" else None, calib_size=CALIB_SIZE)
    shape = shared_core().read_model(str(result.path)).outputs[0].get_partial_shape()
    assert shape.rank.get_length() == 2 and shape[1].get_length() == 1 and shape[0].is_dynamic
    assert read_meta(result.path).export["output_shape"] == ["batch", 1]
    assert_close_to_reference(result.path, tiny_checkpoint, image_dir, fp32=precision == "fp32")


def test_failed_pass_leaves_nothing_at_output(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    from glia_edge.export import exporter

    def interrupted(artifact: Path, *args: object, **kwargs: object) -> None:
        assert artifact.is_file()
        raise KeyboardInterrupt  # an interrupt after the artifact was written, before the rename

    monkeypatch.setattr(exporter, "accuracy_gate", interrupted)
    out = tmp_path / "never.onnx"
    with pytest.raises(KeyboardInterrupt):
        exporter.export(tiny_checkpoint, target="onnx", precision="fp32", output=out)
    assert list(tmp_path.iterdir()) == []  # no artifact, no temp folder


def test_max_drop_fails_a_wrecked_int8_and_writes_nothing(tiny_checkpoint: Path, image_dir: Path,
                                                           tmp_path: Path) -> None:
    """Quantizing every op (LayerNorm, Softmax, adds ...) wrecks a ViT: the gate must catch it."""
    from glia_edge import AccuracyGateError
    from glia_edge.export import export

    everything = ("MatMul", "Gemm", "Conv", "LayerNormalization", "Softmax", "Add", "Mul", "Sub", "Div", "Sigmoid",
                  "ReduceMean", "Concat", "Transpose", "Reshape")
    out = tmp_path / "wrecked.onnx"
    with pytest.raises(AccuracyGateError, match="max-drop"):
        export(tiny_checkpoint, target="onnx", precision="int8", calib=image_dir, calib_size=4, val=image_dir,
               output=out, max_drop=0.002, op_types=everything)
    assert list(tmp_path.iterdir()) == []


def test_reference_scores_fall_with_blur(tiny_checkpoint: Path, image_dir: Path) -> None:
    """Sanity of the fixture the parity tests rely on: the reference ranks something real."""
    from conftest import image_level
    from scipy import stats

    levels = [image_level(p) for p in images_of(image_dir)]
    assert stats.spearmanr(levels, reference_scores(tiny_checkpoint, image_dir))[0] < -0.5


def test_bad_arguments_are_rejected(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from glia_edge import AccuracyGateError
    from glia_edge.export import export

    with pytest.raises(ValueError, match="bf16"):
        export(tiny_checkpoint, target="onnx", precision="bf16", output=tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=".onnx"):
        export(tiny_checkpoint, target="onnx", output=tmp_path / "x.xml")
    with pytest.raises(TypeError, match="unknown export option"):
        export(tiny_checkpoint, target="onnx", output=tmp_path / "x.onnx", no_such_option=1)
    # wrong types fail here, not deep inside a pass, and are never recorded in the metadata
    for options, error, words in [({"batch": "8"}, TypeError, "batch must be a positive integer"),
                                  ({"dynamic": "no"}, TypeError, "dynamic must be True or False"),
                                  ({"crops": 3}, ValueError, "crops must be 1, 5 or 9"),
                                  ({"build_engine": "yes"}, TypeError, "build_engine must be"),
                                  ({"opset": "17"}, TypeError, "opset must be an integer"),
                                  ({"calib_size": 0}, ValueError, "--calib-size must be a positive integer")]:
        with pytest.raises(error, match=words):
            export(tiny_checkpoint, target="onnx", output=tmp_path / "x.onnx", **options)
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(AccuracyGateError, match="validation images"):
        export(tiny_checkpoint, target="onnx", output=tmp_path / "x.onnx", max_drop=0.01)
    assert list(tmp_path.iterdir()) == []
