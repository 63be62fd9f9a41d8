"""The OpenVINO IRs ``glia-edge export --target openvino`` writes carry the adapters' attention fused
into OpenVINO's ScaledDotProductAttention, FP32 and INT8 (NNCF) alike.

The writer converts the exported ONNX with ``openvino.convert_model``, whose MOC transformations
fuse MatMul -> Softmax -> MatMul into ScaledDotProductAttention: as many as OpenVINO's PyTorch
frontend makes from the model itself (two cross-attentions per adapter, one attention per ViT
block). Reading the same ONNX with ``Core.read_model`` skips those transformations: no SDPA, and
about three times the Transposes left in the compiled CPU graph. Tiny randomly initialised
preset, no downloaded weights.
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
pytest.importorskip("nncf")

from glia_edge.ov_core import shared_core  # noqa: E402

TINY = {"depth": 2, "adapter_dim": 16, "adapter_heads": 2, "head_hidden": 32, "local_channels": (8, 16, 16, 24)}


@pytest.fixture(scope="module")
def random_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    """A randomly initialised tiny GLIA, its checkpoint, and a few calibration images."""
    from PIL import Image

    from glia_edge.checkpoint import checkpoint_meta, save_checkpoint
    from glia_edge.meta import ScoreSpec
    from glia_edge.models import create_model
    from glia_edge.preprocess import PreprocessConfig

    torch.manual_seed(0)
    model = create_model("glia_vit_tiny", **TINY).eval()
    model.set_score_scale(50.0, 15.0)
    meta = checkpoint_meta(model, ScoreSpec(name="MOS", min=0.0, max=100.0, mean=50.0, std=15.0),
                           PreprocessConfig(), training={"dataset": "random"})
    root = tmp_path_factory.mktemp("sdpa")
    checkpoint = save_checkpoint(root / "tiny.safetensors", model, meta)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((400, 300), Image.Resampling.BICUBIC).save(images / f"{i}.png")
    return model, checkpoint, images


@pytest.fixture(scope="module")
def irs(random_tiny: tuple[object, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    from glia_edge.export import export

    _, checkpoint, images = random_tiny
    out = tmp_path_factory.mktemp("irs")
    return {p: export(checkpoint, target="openvino", precision=p, calib=images if p == "int8" else None,
                      calib_size=4, output=out / p) for p in ("fp32", "int8")}


def _ops(model: object) -> collections.Counter:
    return collections.Counter(op.get_type_name() for op in model.get_ops())  # type: ignore[attr-defined]


def _runtime_ops(model: object) -> collections.Counter:
    compiled = shared_core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    ops = compiled.get_runtime_model().get_ops()
    return collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in ops)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_attention_is_one_sdpa_op_in_the_ir(irs: dict, random_tiny: tuple, precision: str) -> None:
    model = random_tiny[0]
    ops = _ops(shared_core().read_model(str(irs[precision].path)))
    attentions = 2 * len(model.adapters) + len(model.vit.blocks)
    assert ops["ScaledDotProductAttention"] == attentions == 6, ops
    assert ops["Softmax"] == 0, ops
    if precision == "int8":
        assert ops["FakeQuantize"] > 10, ops  # NNCF quantized around the fused attention


def test_as_fused_as_the_pytorch_frontend_and_fewer_transposes_than_the_unfused_route(irs: dict,
                                                                                     random_tiny: tuple) -> None:
    model = random_tiny[0]
    ir = shared_core().read_model(str(irs["fp32"].path))
    from_torch = ov.convert_model(model, example_input=torch.rand(2, 3, 224, 224))
    assert _ops(ir)["ScaledDotProductAttention"] == _ops(from_torch)["ScaledDotProductAttention"]

    from glia_edge.export.onnx import torch_to_onnx

    onnx_path = torch_to_onnx(model, irs["fp32"].path.parent.parent / "unfused.onnx", crop_size=224)
    unfused = shared_core().read_model(str(onnx_path))  # no MOC transformations: MatMul/Softmax stay
    assert _ops(unfused)["ScaledDotProductAttention"] == 0 and _ops(unfused)["Softmax"] == 6
    assert _ops(ir)["Transpose"] < _ops(unfused)["Transpose"]
    fused_rt, unfused_rt = _runtime_ops(ir), _runtime_ops(unfused)
    # What the CPU runs: 14 against 38 Transposes on this model (OpenVINO 2026.4)
    assert fused_rt["Transpose"] * 2 <= unfused_rt["Transpose"], (fused_rt, unfused_rt)

    # Same outputs as the unfused graph and as PyTorch with the same weights
    x = np.random.default_rng(1).random((3, 3, 224, 224), dtype=np.float32)
    core = shared_core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    fused_out = core.compile_model(ir, "CPU", config)(x)[0].reshape(-1)
    unfused_out = core.compile_model(unfused, "CPU", config)(x)[0].reshape(-1)
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x)).numpy().reshape(-1)
    assert np.abs(fused_out - unfused_out).max() <= 1e-4
    assert np.abs(fused_out - torch_out).max() <= 1e-4


def test_metadata_travels_in_both_irs(irs: dict, random_tiny: tuple) -> None:
    from glia_edge.meta import sha256_file
    from glia_edge.runtimes import read_meta

    for precision, result in irs.items():
        meta = read_meta(result.path)
        assert meta.to_dict() == result.meta.to_dict()
        assert meta.format == "openvino" and meta.precision == precision
        assert meta.source_checkpoint_sha256 == sha256_file(random_tiny[1])


def test_the_openvino_backend_runs_an_onnx_model_with_its_attention_fused(irs: dict, random_tiny: tuple) -> None:
    """The default pick runs the FP32 ONNX on OpenVINO: it must get the fused graph the IR gets."""
    from glia_edge.export import export
    from glia_edge.runtimes.openvino import OpenVinoBackend, with_batch

    onnx_path = export(random_tiny[1], target="onnx", precision="fp32",
                       output=irs["fp32"].path.parent.parent / "backend.onnx").path
    backend = OpenVinoBackend(onnx_path, inference_precision="fp32")
    runs = collections.Counter(op.get_rt_info()["layerType"].astype(str)
                               for op in backend.compiled.get_runtime_model().get_ops())
    ir = with_batch(shared_core().read_model(str(irs["fp32"].path)), backend.batch_size)  # as the backend compiles
    assert runs["Transpose"] == _runtime_ops(ir)["Transpose"], runs
