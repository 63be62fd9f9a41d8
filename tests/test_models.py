"""Model tests that loop over the preset registry: shapes, frozen backbone, export, checkpoints."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from glia_edge.checkpoint import checkpoint_meta, load_checkpoint, read_checkpoint_meta, save_checkpoint
from glia_edge.errors import BackboneWeightsError, CheckpointError
from glia_edge.meta import ScoreSpec
from glia_edge.models import GLIA, create_model, list_models
from glia_edge.preprocess import PreprocessConfig

torch.set_num_threads(2)
SHALLOW = {"depth": 1}


def test_presets_and_model_options_are_checked_before_anything_is_built() -> None:
    from glia_edge.models.registry import check_model_options

    for name, options, words in [("nosuch", {}, "unknown preset 'nosuch'"),
                                 ("glia_vit_nano", {"nosuch": 1}, "unknown model option 'nosuch'"),
                                 ("glia_vit_nano", {"depth": "abc"}, "depth='abc': expected int"),
                                 ("glia_vit_nano", {"depth": 0}, "at least 1 block"),
                                 ("glia_vit_nano", {"local_channels": "ab"}, "expected tuple")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            check_model_options(name, options)
    check_model_options("glia_vit_nano", {"depth": 2, "init_scale": 1, "local_channels": [8, 16, 16, 24],
                                          "local_weights": None})
    with pytest.raises(ValueError, match=re.escape("local_channels=(8, 16): needs 4 widths")):  # crashed at build
        check_model_options("glia_vit_nano", {"local_channels": [8, 16]})
    with pytest.raises(ValueError, match="depth must be >= 1"):  # 0 used to build the full-depth ViT
        create_model("glia_vit_nano", depth=0)


def test_registry_lists_all_presets() -> None:
    assert list_models("glia_*") == ["glia_vit_base", "glia_vit_base_resnet50", "glia_vit_nano", "glia_vit_small",
                                     "glia_vit_tiny"]


def test_nano_is_the_tiny_backbone_cut_to_four_blocks() -> None:
    nano, tiny = create_model("glia_vit_nano"), create_model("glia_vit_tiny")
    assert len(nano.vit.blocks) == len(nano.adapters) == 4 and nano.cfg.depth == 4
    assert nano.cfg.backbone == tiny.cfg.backbone and nano.vit.embed_dim == tiny.vit.embed_dim
    with pytest.raises(KeyError, match="unknown model"):
        create_model("glia_vit_huge")


@pytest.mark.parametrize("name", list_models("glia_*"))
def test_preset_forward_and_gradients_only_on_adapters(name: str) -> None:
    model = create_model(name, **SHALLOW)
    x = torch.rand(2, 3, 224, 224)
    out = model(x)
    assert out.shape == (2,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is None for p in model.vit.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith("vit.") or n.startswith("local.cnn.") for n in trainable)
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.3"))


def test_glia_vit_base_trains_under_3m_parameters() -> None:
    counts = create_model("glia_vit_base").param_counts()
    assert counts["trainable"] < 3_000_000  # LoDa trains 8.9M
    assert counts["total"] > 85_000_000
    assert counts["trainable"] + counts["frozen"] == counts["total"]


def test_score_scale_maps_standardised_output() -> None:
    model = create_model("glia_vit_tiny", **SHALLOW).eval()
    x = torch.rand(2, 3, 224, 224)
    z = model.forward_standardised(x)
    model.set_score_scale(60.0, 12.0)
    torch.testing.assert_close(model(x), z * 12.0 + 60.0)


@pytest.mark.parametrize("name", list_models("glia_*"))
def test_every_preset_exports_to_onnx_with_dynamic_batch(name: str, tmp_path) -> None:
    import onnxruntime as ort

    model = create_model(name, **SHALLOW).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 3, 224, 224), dtype=np.float32)
    got = session.run(None, {"images": x})[0]
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_missing_backbone_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackboneWeightsError, match="not found"):
        create_model("glia_vit_tiny", backbone_weights=str(tmp_path / "nope.safetensors"))


def test_failed_pretrained_download_is_a_clear_error(monkeypatch) -> None:
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("no network")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneWeightsError, match="could not load pretrained"):
        create_model("glia_vit_tiny", backbone_weights="pretrained")


def test_backbone_weights_from_local_file(tmp_path) -> None:
    import timm
    from safetensors.torch import save_file

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=1)
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    model = create_model("glia_vit_tiny", backbone_weights=str(tmp_path / "vit.safetensors"), **SHALLOW)
    torch.testing.assert_close(model.vit.patch_embed.proj.weight, vit.patch_embed.proj.weight)
    wrong = timm.create_model("vit_small_patch16_224", num_classes=0, depth=1)
    save_file(wrong.state_dict(), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(BackboneWeightsError, match="do not fit"):
        create_model("glia_vit_tiny", backbone_weights=str(tmp_path / "wrong.safetensors"), **SHALLOW)


def _save(model: GLIA, path, backbone_weights=None):
    meta = checkpoint_meta(model, ScoreSpec(mean=3.0, std=0.5, min=1, max=5), PreprocessConfig(),
                           backbone_weights=backbone_weights)
    return save_checkpoint(path, model, meta)


def test_checkpoint_round_trip_full(tmp_path) -> None:
    model = create_model("glia_vit_tiny", **SHALLOW).eval()
    model.set_score_scale(3.0, 0.5)
    path = _save(model, tmp_path / "ckpt")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded, meta = load_checkpoint(path)
    assert meta.preset == "glia_vit_tiny" and meta.training["weights_saved"] == "full"
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_trainable_only_checkpoint_records_its_backbone(tmp_path, monkeypatch) -> None:
    import timm

    real = timm.create_model
    # Stand in for the hub: "pretrained" weights are a fixed seeded init, the same at save and load.
    def fake_hub(name, pretrained=False, **kwargs):
        torch.manual_seed(7)
        return real(name.split(".")[0], pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_hub)
    model = create_model("glia_vit_tiny", backbone_weights="pretrained", **SHALLOW).eval()
    path = _save(model, tmp_path / "ckpt.safetensors", backbone_weights="pretrained")
    meta = read_checkpoint_meta(path)
    assert meta.training["weights_saved"] == "trainable"
    assert meta.training["backbone_weights"] == "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    full_size = sum(v.numel() for v in model.state_dict().values())
    saved_size = sum(v.numel() for v in model.trainable_state_dict().values())
    assert saved_size < full_size / 2
    loaded, _ = load_checkpoint(path)
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(bad)


def test_sigmoid_head_bounds_scores_to_the_range_and_standardises_consistently() -> None:
    model = create_model("glia_vit_tiny", score_head="sigmoid", **SHALLOW).eval()
    model.set_score_scale(55.0, 30.0, 10.0, 100.0)
    with torch.no_grad():
        model.head[-1].bias.fill_(50.0)  # a logit far past saturation still lands on the bound, not beyond
        x = torch.rand(2, 3, 224, 224)
        assert torch.all(model(x) <= 100.0) and torch.all(model(x) >= 99.9)
        model.head[-1].bias.fill_(-50.0)
        assert torch.all(model(x) >= 10.0) and torch.all(model(x) <= 10.1)
        model.head[-1].bias.fill_(0.0)
        torch.testing.assert_close(model(x), model.forward_standardised(x) * 30.0 + 55.0)
    with pytest.raises(ValueError, match="range"):
        model.set_score_scale(55.0, 30.0)
    with pytest.raises(ValueError, match="score_head"):
        create_model("glia_vit_tiny", score_head="tanh", **SHALLOW)


def test_sigmoid_head_round_trips_through_a_checkpoint(tmp_path) -> None:
    model = create_model("glia_vit_tiny", score_head="sigmoid", **SHALLOW).eval()
    model.set_score_scale(55.0, 30.0, 10.0, 100.0)
    meta = checkpoint_meta(model, ScoreSpec(min=10.0, max=100.0, mean=55.0, std=30.0), PreprocessConfig())
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, _ = load_checkpoint(path)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert float(loaded.score_min) == 10.0 and float(loaded.score_max) == 100.0
