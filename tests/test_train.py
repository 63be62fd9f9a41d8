"""Real (tiny) CPU trainings: outputs, checkpoint config, exact resume, step limits, bad files."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import glia_edge
from _data_fixtures import _cache, blur_labels  # noqa: F401  (pytest fixtures)
from _data_fixtures import TINY_OVERRIDES
from glia_edge.checkpoint import read_checkpoint_meta
from glia_edge.errors import BackboneWeightsError, CheckpointError, TrainingError
from glia_edge.preprocess import preprocess
from glia_edge import train as train_module
from glia_edge.train import TrainConfig, train

torch.set_num_threads(1)


def tiny_config(out: Path, labels: Path, **changes: object) -> TrainConfig:
    cfg = TrainConfig(dataset="csv", csv=str(labels), preset="glia_vit_tiny", backbone_weights="none",
                      model_overrides=dict(TINY_OVERRIDES), short_side=64, epochs=2, batch_size=8, workers=0,
                      device="cpu", progress=False, output=str(out), splits_file=str(out.parent / "splits.json"),
                      eval_crops="random3")
    return replace(cfg, **changes)


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}


def test_short_cpu_training_writes_checkpoints_metrics_and_config(tmp_path: Path, blur_labels: Path) -> None:
    result = train(tiny_config(tmp_path / "run", blur_labels))
    out = tmp_path / "run"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.state.pt", "splits.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["step"] == 2 * 6  # 16 training images x 3 crops / batch 8 -> 6 steps per epoch
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_srcc" in header and "test" not in header  # selection reads the validation part only

    meta = read_checkpoint_meta(out / "last.safetensors")
    train_scores = [100.0, 80.0, 60.0, 40.0] * 4  # 6 refs: 1 test (20%), 1 validation, 4 train
    assert meta.preset == "glia_vit_tiny" and meta.preprocess["short_side"] == 64
    assert meta.score["min"] == 40.0 and meta.score["max"] == 100.0 and meta.score["higher_is_better"]
    assert meta.score["mean"] == pytest.approx(np.mean(train_scores))
    assert meta.score["std"] == pytest.approx(np.std(train_scores))
    t = meta.training
    assert (t["dataset"], t["split"], t["seed"], t["epoch"], t["n_train"], t["n_val"]) == ("csv", 0, 3407, 2, 16, 4)
    assert t["split_sizes"] == {"train": 16, "val": 4, "test": 4} and t["eval_part"] == "val"
    assert t["eval_crops"] == "random3" and t["best_selected_on"] == "val SRCC" and t["best_epoch"] in (1, 2)
    assert t["loss"]["name"] == "plcc+l1" and t["weights_saved"] == "full" and t["backbone_weights"] is None

    # The saved model outputs MOS directly: the runtime API reproduces the in-memory model.
    images = sorted((blur_labels.parent / "images").glob("*.png"))[:3]
    with glia_edge.load(out / "last.safetensors") as backend:
        scores = backend.predict(images)
    with torch.no_grad():
        expected = [result.model(torch.from_numpy(preprocess(p, backend.preprocess_config))).mean().item()
                    for p in images]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    assert all(0.0 < s < 200.0 for s in scores)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path: Path, blur_labels: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train(tiny_config(tmp_path / "straight", blur_labels))
    real_evaluate, calls = train_module._evaluate, []

    def crash_in_epoch_2(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed late in epoch 2, before it saves
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "_evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "resumed", blur_labels))
    monkeypatch.setattr(train_module, "_evaluate", real_evaluate)
    resumed = train(tiny_config(tmp_path / "resumed", blur_labels, resume=str(tmp_path / "resumed")))
    assert [r["epoch"] for r in resumed.history] == [1, 2] and resumed.history[-1]["step"] == 12
    a, b = trainable(straight.model), trainable(resumed.model)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    state = torch.load(tmp_path / "resumed" / "last.state.pt", weights_only=False)
    assert state["epoch"] == 2 and state["step"] == 12
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_new_run_in_an_old_run_folder_starts_its_metrics_afresh(tmp_path: Path, blur_labels: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    train(tiny_config(tmp_path / "run", blur_labels, epochs=1, max_steps=2))
    with caplog.at_level("WARNING"):  # replacing a run takes --overwrite (refused without it)
        train(tiny_config(tmp_path / "run", blur_labels, epochs=1, max_steps=1, overwrite=True))
    assert "holds an earlier run" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]  # only this run's rows, as in metrics.csv
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 2


def test_a_loss_that_becomes_nan_stops_the_run_before_the_step(tmp_path: Path, blur_labels: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "loss_of", lambda cfg: lambda pred, y: (pred * float("nan")).mean())
    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        train(tiny_config(tmp_path / "run", blur_labels))
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_an_output_that_is_a_file_is_refused_before_the_data(tmp_path: Path, blur_labels: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(train_module, "prepare_data", lambda *a, **k: pytest.fail("data prepared"))
    with pytest.raises(CheckpointError, match="afile: is a file"):
        train(tiny_config(tmp_path / "afile", blur_labels))


def test_max_steps_stops_the_run_early(tmp_path: Path, blur_labels: Path) -> None:
    result = train(tiny_config(tmp_path / "run", blur_labels, epochs=5, max_steps=3))
    assert len(result.history) == 1 and result.history[0]["step"] == 3
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path: Path, blur_labels: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    folder = blur_labels.parent
    good = (folder / "images" / "coffee-blur-0.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])  # header fine, pixels cut off
    (tmp_path / "empty.png").write_bytes(b"")
    from _data_fixtures import PHOTOS
    from glia_edge.data.splits import make_splits

    ref = make_splits(list(PHOTOS))[0]["train"][0]  # a training reference: the test part is never read
    labels = tmp_path / "labels.csv"
    labels.write_text(blur_labels.read_text() + f"{tmp_path / 'truncated.png'},90,{ref},blur,0\n"
                      f"{tmp_path / 'empty.png'},70,{ref},blur,1\n")
    with caplog.at_level(logging.WARNING):
        result = train(tiny_config(tmp_path / "run", labels, epochs=1, root=str(folder),
                                   splits_file=str(tmp_path / "bad_splits.json")))
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    assert "empty.png: empty file" in caplog.text
    assert "truncated.png" in caplog.text  # met while cropping or scoring, skipped there


def test_missing_backbone_weights_are_a_clear_error(tmp_path: Path, blur_labels: Path) -> None:
    with pytest.raises(BackboneWeightsError, match="not found"):
        train(tiny_config(tmp_path / "run", blur_labels, backbone_weights=str(tmp_path / "vit.safetensors")))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_trains_on_a_synthetic_set_and_eval_ranks_its_held_out_references(tmp_path: Path) -> None:
    """``glia-edge train`` then ``glia-edge eval`` end to end on graded synthetic distortions."""
    from typer.testing import CliRunner

    from glia_edge.cli import app
    from glia_edge.distortions import make_dataset

    labels = make_dataset(tmp_path / "synth", types=["gaussian_blur", "pixelate"], size=128, max_tiles=1)
    tiny = [f"--model-opt={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY_OVERRIDES.items()]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--dataset", "csv", "--csv", str(labels), "--preset", "glia_vit_tiny",
                                  "--backbone-weights", "none", *tiny, "--short-side", "96", "--epochs", "12",
                                  "--batch-size", "16", "--lr", "2e-3", "--workers", "0", "--no-progress",
                                  "--output", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "best.safetensors").is_file()
    preds = tmp_path / "predictions.csv"
    evaluated = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "run"), "--dataset", "csv", "--csv",
                                    str(labels), "--format", "json", "--no-progress", "--predictions", str(preds)])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)["results"][0]
    assert result["split"] == 0 and result["n"] >= 2 * 11  # two held-out photos, 1 + 2 x 5 images per reference
    assert result["srcc"] > 0.3, result  # across photos: content calibration is the hard part for a random ViT
    assert level_ranking(preds, labels) < -0.7  # within a photo, scores fall as distortion rises


def level_ranking(predictions: Path, labels: Path) -> float:
    """Mean Spearman(level, prediction) over (reference, distortion) series, level 0 included."""
    import pandas as pd
    from scipy.stats import spearmanr

    rows = pd.read_csv(predictions).merge(pd.read_csv(labels), on="path")
    pristine = rows[rows.level == 0]
    values = []
    for (ref, part, _), series in rows[rows.level > 0].groupby(["ref", "part", "distortion"]):
        series = pd.concat([pristine[(pristine.ref == ref) & (pristine.part == part)], series])
        values.append(spearmanr(series.level, series.prediction)[0])
    return float(np.mean(values))


def test_ladder_rank_loss_counts_only_misordered_pairs_inside_each_ladder() -> None:
    from glia_edge.losses import ladder_rank_loss

    target = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0]])
    assert ladder_rank_loss(torch.tensor([[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]), target).item() == 0.0
    # Ladder 2 sits far below ladder 1: no cross-ladder pair is compared, so still 0.
    assert ladder_rank_loss(torch.tensor([[2.0, 1.0, 0.0], [-5.0, -6.0, -7.0]]), target).item() == 0.0
    reversed_ = ladder_rank_loss(torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]), target, margin=0.2)
    assert reversed_.item() == pytest.approx((1.2 + 2.2 + 1.2) / 3)


def test_ladders_share_one_crop_box_and_come_best_first(blur_labels: Path) -> None:
    from glia_edge.data import load_dataset
    from glia_edge.data.torch_dataset import LadderCrops
    from glia_edge.preprocess import PreprocessConfig
    from glia_edge.train_data import synthetic_ladders

    records = load_dataset("csv", csv=blur_labels).records
    ladders = synthetic_ladders(records, blur_labels)
    assert len(ladders) == 6 and all(len(ladder) == 4 for ladder in ladders)
    assert all([r.score for r in ladder] == [100.0, 80.0, 60.0, 40.0] for ladder in ladders)
    cfg = PreprocessConfig(short_side=64, crop_size=32)
    same_image = [[ladders[0][0]] * 3]  # one file three times: identical crops prove one shared box and flip
    crops, targets, index = LadderCrops(same_image, cfg, seed=1, crops_per_image=4)[3]
    assert crops.shape == (3, 3, 32, 32) and index == 0
    assert torch.equal(crops[0], crops[1]) and torch.equal(crops[0], crops[2])
    crops, targets, _ = LadderCrops(ladders, cfg, seed=1, score_mean=70.0, score_std=10.0)[0]
    assert targets.tolist() == [3.0, 1.0, -1.0, -3.0] and not torch.equal(crops[0], crops[3])
    with pytest.raises(ValueError, match="common length"):
        LadderCrops([ladders[0], ladders[1][:2]], cfg)


def test_ladder_repeats_serve_a_type_more_often_and_refuse_unknown_types(blur_labels: Path) -> None:
    from glia_edge.data import load_dataset
    from glia_edge.errors import DatasetError
    from glia_edge.train_data import synthetic_ladders

    records = load_dataset("csv", csv=blur_labels).records
    once = synthetic_ladders(records, blur_labels)
    thrice = synthetic_ladders(records, blur_labels, {"blur": 3})
    assert len(thrice) == 3 * len(once) and {tuple(map(id, ladder)) for ladder in thrice} == \
        {tuple(map(id, ladder)) for ladder in once}
    with pytest.raises(DatasetError, match="jpeg"):
        synthetic_ladders(records, blur_labels, {"jpeg": 2})


def test_cli_refuses_a_malformed_ladder_repeat_in_one_line(blur_labels: Path) -> None:
    from typer.testing import CliRunner

    from glia_edge.cli import app

    result = CliRunner().invoke(app, ["train", "--dataset", "csv", "--csv", str(blur_labels), "--ladder-repeat", "blur"])
    assert result.exit_code == 2 and "TYPE=N" in result.output


def test_ladder_training_records_its_loss_and_batches_whole_ladders(tmp_path: Path, blur_labels: Path) -> None:
    result = train(tiny_config(tmp_path / "run", blur_labels, rank_weight=1.0, epochs=1))
    meta = read_checkpoint_meta(tmp_path / "run" / "last.safetensors")
    assert meta.training["loss"]["name"] == "plcc+l1+ladder-rank" and meta.training["rank_weight"] == 1.0
    # 4 training references x 1 type = 4 ladders x 3 crops; batch 8 images -> 2 ladders of 4 -> 6 steps.
    assert result.history[-1]["step"] == 6 and np.isfinite(result.history[-1]["train_loss"])


def test_ladder_training_needs_a_graded_synthetic_csv(tmp_path: Path, blur_labels: Path) -> None:
    from glia_edge.errors import DatasetError

    plain = tmp_path / "plain.csv"
    plain.write_text("path,score\n" + "".join(f"{blur_labels.parent / 'images' / p.name},{i}\n"
                                             for i, p in enumerate(sorted((blur_labels.parent / "images").iterdir()))))
    with pytest.raises(DatasetError, match="needs columns"):
        train(tiny_config(tmp_path / "run", plain, rank_weight=1.0, epochs=1))


def test_cross_rank_loss_compares_only_pairs_across_ladders_with_a_margin_from_the_label_gap() -> None:
    from glia_edge.losses import cross_rank_loss

    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # Inside each ladder the order is reversed, across ladders it holds with room: within-ladder pairs are
    # ladder_rank_loss's job, so this loss is 0.
    assert cross_rank_loss(torch.tensor([[0.0, 0.5], [3.0, -3.0]]), target, margin_scale=1.0).item() == pytest.approx(
        # (0,0)=0.0 vs (1,1)=-3.0: gap 3 >= 1 ok; (1,0)=3.0 vs (0,1)=0.5: gap 2.5 ok
        0.0)
    assert cross_rank_loss(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), target, margin_scale=1.0).item() == 0.0
    close = torch.tensor([[0.5, 0.0], [1.0, 0.45]])
    # (0,0) vs (1,1): pred gap 0.05, short by 0.95; (1,0) vs (0,1): pred gap 1.0, ok -> mean over 2 pairs.
    assert cross_rank_loss(close, target, margin_scale=1.0).item() == pytest.approx(0.95 / 2)


def test_cross_ranking_is_recorded_and_trains(tmp_path: Path, blur_labels: Path) -> None:
    result = train(tiny_config(tmp_path / "run", blur_labels, rank_weight=1.0, cross_rank_weight=1.0, epochs=1,
                               model_overrides={**TINY_OVERRIDES, "score_head": "sigmoid"}))
    meta = read_checkpoint_meta(tmp_path / "run" / "last.safetensors")
    assert meta.training["loss"]["name"] == "plcc+l1+ladder-rank+cross-rank"
    assert meta.model_config["score_head"] == "sigmoid" and np.isfinite(result.history[-1]["train_loss"])
    lo, hi = meta.score_spec.min, meta.score_spec.max
    scores = [r.score for r in glia_edge.load(tmp_path / "run" / "last.safetensors").iter_scores(
        sorted((blur_labels.parent / "images").iterdir()))]
    assert all(lo <= s <= hi for s in scores)
