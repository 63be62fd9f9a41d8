"""The research protocol: validation parts, no test image scored while training, LoDa's splits
regenerated, the evaluation-crop protocol, LoDa's local stream, local timm checkpoints, the table."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from _data_fixtures import _cache, blur_labels  # noqa: F401  (pytest fixtures)
from _data_fixtures import PHOTOS, TINY_OVERRIDES, make_blur_set, make_koniq
from glia_edge.data import load_dataset
from glia_edge.data.crop_protocol import CropProtocol, parse_crops
from glia_edge.data.loda_splits import loda_index_splits, loda_reference_splits
from glia_edge.data.splits import create_splits, select
from glia_edge.errors import BackboneWeightsError, DatasetError
from glia_edge.models import list_models
from glia_edge.preprocess import PreprocessConfig, crops_from_image, load_image, prepare, to_chw_float

torch.set_num_threads(1)

#: glia_vit_base_resnet50 shrunk for CPU tests: a ViT-Ti block, ResNet-18 stages pooled to 2x2.
TINY_RESNET = {"backbone": "vit_tiny_patch16_224", "depth": 1, "img_size": 64, "adapter_dim": 16, "adapter_heads": 2,
               "head_hidden": 32, "local_arch": "resnet18", "local_grid": 2}


@pytest.mark.parametrize("n, train, test", [(10073, 8058, 2015), (1162, 930, 232), (11125, 8900, 2225)])
def test_loda_by_image_splits_have_its_published_sizes(n: int, train: int, test: int) -> None:
    splits = loda_index_splits(n)
    assert splits == loda_index_splits(n) and len(splits) == 10  # seeded: the same every time
    for s in splits:
        assert (len(s["train"]), len(s["test"])) == (train, test)
        assert sorted(s["train"] + s["test"]) == list(range(n))
    assert len({tuple(s["test"][:20]) for s in splits}) == 10
    # LoDa reshuffles one list cumulatively: split 1 is not split 0's draw again from a fresh seed.
    assert splits[1] != loda_index_splits(n, n_splits=1)[0]


def test_loda_kadid_splits_are_65_of_81_references() -> None:
    refs = [f"I{i:02d}.png" for i in range(1, 82)]
    splits = loda_reference_splits(refs)
    for s in splits:
        assert (len(s["train"]), len(s["test"])) == (65, 16) and not set(s["train"]) & set(s["test"])
        assert (125 * len(s["train"]), 125 * len(s["test"])) == (8125, 2000)  # 25 types x 5 levels per reference
    assert splits[0]["test"][:4] == ["I08.png", "I14.png", "I17.png", "I28.png"]  # pinned: guards the draw


def test_loda_splits_sit_beside_the_project_splits_with_validation_carved(blur_labels: Path) -> None:
    ds = load_dataset("csv", csv=blur_labels)
    loda, ours = create_splits(ds, source="loda"), create_splits(ds)
    assert loda.source == "loda" and ours.source == "glia"
    expected = loda_reference_splits(list(PHOTOS))
    for i in range(10):
        parts = select(ds, loda, i)
        test_refs = {r.ref for r in parts["test"].records}
        assert test_refs == set(expected[i]["test"])  # LoDa's test part unchanged
        val_refs, train_refs = {r.ref for r in parts["val"].records}, {r.ref for r in parts["train"].records}
        assert val_refs and not val_refs & train_refs and val_refs | train_refs == set(expected[i]["train"])
    with pytest.raises(DatasetError, match="10073 rows"):  # a partial KonIQ cannot take LoDa's indices
        create_splits(load_dataset("koniq", make_koniq(ds.root.parent / "k", n=20, with_sets=False)), source="loda")


def test_random_crops_are_seeded_per_image_and_cut_by_the_shared_preprocessing(blur_labels: Path) -> None:
    cfg = PreprocessConfig(short_side=72, crop_size=32)
    path = sorted((blur_labels.parent / "images").glob("*.png"))[0]
    img = load_image(path)
    protocol = parse_crops("random15")
    crops = protocol.crops(img, cfg, "images/a.png")
    assert crops.shape == (15, 3, 32, 32) and protocol.describe().startswith("15 random crops")
    np.testing.assert_array_equal(crops, protocol.crops(img, cfg, "images/a.png"))  # same key: same crops
    assert not np.array_equal(crops, protocol.crops(img, cfg, "images/b.png"))
    full = to_chw_float(prepare(img, cfg))
    windows = {(y, x) for y in range(full.shape[1] - 31) for x in range(full.shape[2] - 31)}
    for crop in crops:  # every crop is an unflipped window of the resized image
        assert any(np.array_equal(crop, full[:, y:y + 32, x:x + 32]) for y, x in windows)
    np.testing.assert_array_equal(parse_crops("grid5").crops(img, cfg, "k"), crops_from_image(img, cfg, 5))
    assert parse_crops("9") == CropProtocol("grid", 9) and parse_crops(1).name == "grid1"
    from glia_edge.train_config import TrainConfig

    assert TrainConfig("koniq").eval_crops == "random15"  # validation uses LoDa's test crops by default
    import inspect

    from glia_edge.cli.eval_cmd import eval_command
    from glia_edge.evaluate import evaluate

    assert inspect.signature(eval_command).parameters["crops"].default.default == "random15"
    assert inspect.signature(evaluate).parameters["crops"].default == "random15"
    for bad in ("grid4", "random0", "center"):
        with pytest.raises(DatasetError):
            parse_crops(bad)


def _tiny(out: Path, labels: Path, **changes: object):
    from glia_edge.train_config import TrainConfig

    cfg = TrainConfig(dataset="csv", csv=str(labels), preset="glia_vit_tiny", backbone_weights="none",
                      model_overrides=dict(TINY_OVERRIDES), short_side=64, epochs=2, batch_size=8, workers=0,
                      device="cpu", progress=False, output=str(out), splits_file=str(out.parent / "splits.json"),
                      eval_crops="random3")
    return replace(cfg, **changes)


def test_no_test_image_is_scored_during_training(tmp_path: Path, blur_labels: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import glia_edge.data.torch_dataset as torch_dataset
    from glia_edge.data.splits import read_splits
    from glia_edge.train import train

    opened: list[Path] = []
    real = torch_dataset.load_resized  # every image training decodes goes through it

    def spy(source, *args, **kwargs):
        opened.append(Path(source).resolve())
        return real(source, *args, **kwargs)

    monkeypatch.setattr(torch_dataset, "load_resized", spy)
    result = train(_tiny(tmp_path / "run", blur_labels))
    parts = read_splits(tmp_path / "run" / "splits.json").splits[0]
    ds = load_dataset("csv", csv=blur_labels)
    paths = {part: {r.path.resolve() for r in ds.records if r.ref in parts[part]} for part in ("train", "val", "test")}
    assert paths["test"] and not paths["test"] & set(opened)  # not one test image decoded, so none scored
    assert paths["val"] <= set(opened) and paths["train"] <= set(opened)
    assert all(k.startswith("val_") for row in result.history for k in row if k.endswith("srcc"))


def test_a_random_frozen_local_stream_is_refused(tmp_path: Path, blur_labels: Path) -> None:
    from glia_edge.train import train

    cfg = _tiny(tmp_path / "run", blur_labels, preset="glia_vit_base_resnet50", model_overrides=TINY_RESNET,
                local_weights="none")
    with pytest.raises(BackboneWeightsError, match="--local-weights"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def _timm_files(tmp_path: Path, vit_arch: str, cnn_arch: str | None) -> tuple[Path, Path | None]:
    """A ViT saved as timm's hub file (model.safetensors) and a CNN as a timm training checkpoint."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    vit = timm.create_model(vit_arch, depth=1)
    vit_file = tmp_path / vit_arch / "model.safetensors"
    vit_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(vit.state_dict(), str(vit_file))
    if cnn_arch is None:
        return vit_file, None
    import argparse

    cnn_file = tmp_path / f"{cnn_arch}-checkpoint.pth.tar"  # as timm's train.py writes it
    torch.save({"epoch": 3, "arch": cnn_arch, "state_dict": timm.create_model(cnn_arch).state_dict(),
                "args": argparse.Namespace(model=cnn_arch, lr=0.1)}, cnn_file)
    return vit_file, cnn_file


@pytest.mark.parametrize("preset", list_models("glia_*"))
def test_a_local_timm_checkpoint_loads_into_every_preset(preset: str, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import load_file

    from glia_edge.models import create_model

    probe = create_model(preset, depth=1)
    vit_file, cnn_file = _timm_files(tmp_path, probe.cfg.backbone,
                                     "resnet50" if probe.cfg.local_stream == "resnet50" else None)
    model = create_model(preset, backbone_weights=str(vit_file), local_weights=str(cnn_file) if cnn_file else None,
                         depth=1)
    saved = load_file(str(vit_file))
    torch.testing.assert_close(model.vit.patch_embed.proj.weight, saved["patch_embed.proj.weight"])
    torch.testing.assert_close(model.vit.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])
    if cnn_file is not None:
        cnn = torch.load(cnn_file, weights_only=False)["state_dict"]  # the test's own file
        torch.testing.assert_close(model.local.cnn.layer4[2].conv3.weight, cnn["layer4.2.conv3.weight"])
        torch.testing.assert_close(model.local.cnn.bn1.running_var, cnn["bn1.running_var"])
    assert timm.list_models(probe.cfg.backbone)


def test_loda_local_stream_normalisation_bn_and_tokens() -> None:
    from glia_edge.models import create_model
    from glia_edge.models.glia import IMAGENET_MEAN, IMAGENET_STD

    model = create_model("glia_vit_base_resnet50", **TINY_RESNET)
    assert model.local.input_mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert model.local.input_std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    x = torch.rand(4, 3, 64, 64)
    assert model.local(x).shape == (4, 4 * 2 * 2, 16)  # four stages x (2 x 2) tokens, concatenated
    stage = model.local.extract[0]
    assert [type(m).__name__ for m in stage] == ["Conv2d", "GELU", "Conv2d", "AdaptiveAvgPool2d"]
    assert stage[0].kernel_size == (1, 1) and stage[2].kernel_size == (3, 3)
    model.train()
    assert model.local.cnn.training and not model.vit.training  # BatchNorm trains as in LoDa; the ViT does not
    before = model.local.cnn.bn1.running_mean.clone()
    model.forward_standardised(x).sum().backward()
    assert not torch.equal(before, model.local.cnn.bn1.running_mean)  # statistics follow the data
    assert all(p.grad is None for p in model.local.cnn.parameters())  # the weights stay frozen
    assert "local.cnn.bn1.running_mean" in model.trainable_state_dict()  # so checkpoints keep them
    frozen = create_model("glia_vit_base_resnet50", local_bn="frozen", **TINY_RESNET).train()
    assert not frozen.local.cnn.training and "local.cnn.bn1.running_mean" not in frozen.trainable_state_dict()


def test_reproduce_resumes_per_split_and_writes_the_table(tmp_path: Path) -> None:
    from glia_edge.reproduce import ReproduceOptions, reproduce, split_protocol, split_state

    opts = ReproduceOptions("koniq", root="/data/koniq", output=str(tmp_path / "out"), splits=[0, 1, 2])
    (tmp_path / "out" / "split0").mkdir(parents=True)
    (tmp_path / "out" / "split0" / "done.json").write_text(json.dumps({"protocol": split_protocol(opts, 0)}))
    (tmp_path / "out" / "split1").mkdir()
    (tmp_path / "out" / "split1" / "last.safetensors").write_bytes(b"x")
    torch.save({"epoch": 3, "protocol": split_protocol(opts, 1)}, tmp_path / "out" / "split1" / "last.state.pt")
    assert [split_state(tmp_path / "out" / f"split{i}") for i in range(3)] == ["done", "resume", "new"]

    trained, scored = [], []

    def fake_train(cfg) -> None:
        trained.append((cfg.split, cfg.resume, cfg.preset, cfg.epochs, cfg.eval_crops, cfg.output))

    def fake_score(o, run, split):
        scored.append(split)
        best = {"srcc": 0.80 + split / 100, "plcc": 0.85, "krcc": 0.6, "rmse": 0.3 + split, "epoch": 4, "failed": 0}
        return {"split": split, "crops": "random15", "sizes": {"train": 7253, "val": 805, "test": 2015},
                "score": {"name": "MOS", "min": 1.0, "max": 5.0}, "best": best,
                "last": {**best, "srcc": 0.7, "epoch": 10}}

    rows, md, table_csv = reproduce(opts, "glia-edge reproduce koniq --root /data/koniq", train_fn=fake_train,
                                    score_fn=fake_score)
    run1, run2 = str(tmp_path / "out" / "split1"), str(tmp_path / "out" / "split2")
    assert trained == [(1, run1, "glia_vit_base", 10, "random15", run1),
                       (2, None, "glia_vit_base", 10, "random15", run2)]
    assert scored == [0, 1, 2]
    assert (rows[0].checkpoint, rows[0].splits, rows[0].srcc) == ("best (validation)", 3, pytest.approx(0.81))
    assert (rows[1].checkpoint, rows[1].srcc, rows[0].rmse) == ("last epoch", pytest.approx(0.7), pytest.approx(1.3))
    text = md.read_text()
    assert "`glia-edge reproduce koniq --root /data/koniq`" in text and "7253 / 805 / 2015" in text
    assert "0.932 / 0.944" in text and "MOS 1-5" in text
    assert "Differs from the papers' protocol: splits=[0, 1, 2] (protocol: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])" in text
    lines = table_csv.read_text().splitlines()
    assert lines[0].startswith("train_set,test_set,checkpoint,splits,srcc,plcc,krcc,rmse,rmse_scale,crops,command")
    assert len(lines) == 3 and lines[1].endswith(",random15,glia-edge reproduce koniq --root /data/koniq")
    again = reproduce(opts, "cmd", train_fn=fake_train, score_fn=fake_score)[0]  # everything cached now
    assert len(trained) == 2 and len(scored) == 3 and again == rows
    assert json.loads((tmp_path / "out" / "split2" / "test.json").read_text())["best"]["epoch"] == 4


def test_reproduce_checks_splits_and_cross_sets_before_any_training(tmp_path: Path) -> None:
    from glia_edge.errors import DatasetError
    from glia_edge.reproduce import ReproduceOptions, reproduce

    def never(*args: object) -> None:
        raise AssertionError("trained although the options were wrong")

    for changes, words in [({"splits": [0, 10]}, "split 10 does not exist"),
                           ({"cross": {"livec": str(tmp_path / "nonexist")}}, "--cross livec="),
                           ({"cross": {"nosuch": str(tmp_path)}}, "unknown dataset 'nosuch'")]:
        opts = ReproduceOptions("koniq", root="/data/koniq", output=str(tmp_path / "out"), **changes)
        with pytest.raises(DatasetError, match=words):
            reproduce(opts, train_fn=never, score_fn=never)


def test_reproduce_cli_end_to_end_on_a_tiny_synthetic_set(tmp_path: Path) -> None:
    """``glia-edge reproduce`` trains two splits of a tiny csv set with a random tiny backbone, scores
    each test part at best and last, scores another set whole (cross rows), and resumes for free."""
    from typer.testing import CliRunner

    from glia_edge.cli import app
    from glia_edge.data.splits import read_splits
    from glia_edge.evaluate import evaluate

    labels = make_blur_set(tmp_path / "set")
    other = make_blur_set(tmp_path / "other", photos=("camera", "moon", "horse"))
    tiny = [f"--model-opt={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in TINY_OVERRIDES.items()]
    out = tmp_path / "out"
    args = ["reproduce", "csv", "--csv", str(labels), "--output", str(out), "--splits", "0-1", "--epochs", "1",
            "--preset", "glia_vit_tiny", "--backbone-weights", "none", *tiny, "--short-side", "64",
            "--batch-size", "8", "--workers", "0", "--eval-crops", "random3", "--cross", f"csv={other}",
            "--device", "cpu", "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    for split in (0, 1):
        run = out / f"split{split}"
        assert (run / "best.safetensors").is_file() and (run / "done.json").is_file()
        result = json.loads((run / "test.json").read_text())
        test_refs = read_splits(run / "splits.json").splits[split]["test"]
        assert result["sizes"] == {"train": 16, "val": 4, "test": 4 * len(test_refs)}
        direct = evaluate(run / "last.safetensors", "csv", csv=labels, split=split, crops="random3")
        assert result["last"]["srcc"] == pytest.approx(direct.metrics.srcc) and result["last"]["epoch"] == 1
        assert result["cross:csv"]["n"] == 12  # the other set, whole
    rows = list(__import__("csv").DictReader((out / "table.csv").open()))
    assert [(r["test_set"], r["checkpoint"], r["splits"]) for r in rows] == [
        ("CSV set", "best (validation)", "2"), ("CSV set", "last epoch", "2"), ("CSV set", "best (validation)", "2")]
    command = rows[0]["command"]
    assert command.startswith(f"glia-edge reproduce csv --csv {labels} --output {out} --splits 0,1 ")
    assert "--epochs 1" in command and f"--cross csv={other}" in command and "--model-opt depth=2" in command
    assert "epochs=1 (protocol: 10)" in (out / "table.md").read_text()
    stamp = (out / "split0" / "best.safetensors").stat().st_mtime_ns
    (out / "split1" / "done.json").unlink()  # as if split 1 had been cut short after its last save
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert (out / "split0" / "best.safetensors").stat().st_mtime_ns == stamp  # finished splits are not retrained
    assert list(__import__("csv").DictReader((out / "table.csv").open())) == rows


def test_the_loda_stream_preset_trains_from_a_local_resnet_file_and_reloads(tmp_path: Path, blur_labels: Path) -> None:
    import timm

    import glia_edge
    from glia_edge.checkpoint import read_checkpoint_meta
    from glia_edge.preprocess import preprocess
    from glia_edge.train import train

    cnn_file = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), cnn_file)
    result = train(_tiny(tmp_path / "run", blur_labels, preset="glia_vit_base_resnet50", model_overrides=TINY_RESNET,
                         local_weights=str(cnn_file), epochs=1))
    meta = read_checkpoint_meta(tmp_path / "run" / "last.safetensors")
    assert meta.training["local_weights"] == str(cnn_file) and meta.training["weights_saved"] == "full"
    start = torch.load(cnn_file, weights_only=True)["bn1.running_mean"]
    assert not torch.equal(result.model.local.cnn.bn1.running_mean, start)  # BatchNorm followed the data
    path = sorted((blur_labels.parent / "images").glob("*.png"))[0]
    with glia_edge.load(tmp_path / "run" / "last.safetensors") as backend:
        got = backend.predict([path])[0]
        crops = torch.from_numpy(preprocess(path, backend.preprocess_config))
    with torch.no_grad():
        want = result.model.eval()(crops).mean().item()
    assert got == pytest.approx(want, rel=1e-4, abs=1e-3)  # the saved running statistics come back
