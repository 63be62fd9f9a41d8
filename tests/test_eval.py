"""Evaluation through the runtime API: metrics, split defaults, medians over splits, the CLI, ONNX."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import glia_edge
from _data_fixtures import TINY_OVERRIDES, make_blur_set
from conftest import PHOTOS, image_level
from glia_edge.cli import app
from glia_edge.data.splits import read_splits
from glia_edge.errors import CheckpointError, DatasetError
from glia_edge.evaluate import evaluate, evaluate_splits, split_checkpoint
from glia_edge.metrics import iqa_metrics


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def blur_csv(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared blur photos as a csv set: score falls 20 per blur level, grouped by photo."""
    path = tmp_path_factory.mktemp("eval") / "labels.csv"
    rows = [f"{p},{100 - 20 * image_level(p)},{p.stem.rsplit('_b', 1)[0]}" for p in sorted(image_dir.glob("*.jpg"))]
    path.write_text("path,score,ref\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch run of a 64-pixel GLIA on split 3 of a small blur set: (run folder, labels.csv)."""
    from glia_edge.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_run")
    labels = make_blur_set(root / "data", photos=("astronaut", "coffee", "chelsea", "rocket", "camera"))
    cfg = TrainConfig(dataset="csv", csv=str(labels), preset="glia_vit_tiny", backbone_weights="none",
                      model_overrides=dict(TINY_OVERRIDES), short_side=64, epochs=1, batch_size=8, workers=0,
                      device="cpu", progress=False, output=str(root / "run"), split=3,
                      splits_file=str(root / "splits.json"), eval_crops="grid1")
    train(cfg)
    return root / "run", labels


def test_metrics_come_from_the_runtime_scores(tiny_checkpoint: Path, blur_csv: Path, image_dir: Path) -> None:
    result = evaluate(tiny_checkpoint, "csv", csv=blur_csv, split="all", crops="grid1")
    paths = sorted(image_dir.glob("*.jpg"))
    with glia_edge.load(tiny_checkpoint) as backend:
        direct = backend.predict(paths)
    expected = iqa_metrics(direct, [100 - 20 * image_level(p) for p in paths])
    assert result.metrics.n == len(PHOTOS) * 5 and result.failed == 0
    for key in ("srcc", "plcc", "krcc", "rmse"):
        assert getattr(result.metrics, key) == pytest.approx(getattr(expected, key), rel=1e-6)
    assert result.metrics.srcc > 0.7  # the shared checkpoint was fitted to rank blur


def test_eval_defaults_to_the_split_the_run_trained_on(tiny_run: tuple[Path, Path]) -> None:
    run, labels = tiny_run
    result = evaluate(run / "best.safetensors", "csv", csv=labels, crops="grid1")
    test_refs = read_splits(run / "splits.json").splits[3]["test"]
    assert result.split == 3 and {key.split("/")[1].split("-")[0] for key, _, _ in result.predictions} == set(test_refs)
    assert result.metrics.n == 4 * len(test_refs)


def test_another_set_is_scored_whole_by_default(tiny_run: tuple[Path, Path], blur_csv: Path) -> None:
    run, _ = tiny_run  # trained on another csv set: its split file does not apply here
    result = evaluate(run / "best.safetensors", "csv", csv=blur_csv, crops="grid1")
    assert result.split == "all" and result.metrics.n == len(PHOTOS) * 5


def test_one_checkpoint_per_split_gives_medians(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, labels = tiny_run
    for split in range(3):
        folder = tmp_path / "runs" / f"split{split}"
        folder.mkdir(parents=True)
        shutil.copy(run / "best.safetensors", folder / "best.safetensors")
    # Copies of one split-3 run stand in for three runs: their test parts hold its training images,
    # which evaluation refuses unless told (allow_train_overlap).
    with pytest.raises(DatasetError, match="allow-train-overlap"):
        evaluate_splits(tmp_path / "runs", "csv", [0, 1, 2], csv=labels, crops="grid1")
    results, median = evaluate_splits(tmp_path / "runs", "csv", [0, 1, 2], csv=labels, crops="grid1",
                                      allow_train_overlap=True)
    assert [r.split for r in results] == [0, 1, 2] and all(r.metrics.n == 4 for r in results)
    assert median["srcc"] == pytest.approx(np.median([r.metrics.srcc for r in results]))
    pattern = str(tmp_path / "runs" / "split{split}" / "best.safetensors")
    _, median_again = evaluate_splits(pattern, "csv", [0, 1, 2], csv=labels, crops="grid1",
                                      allow_train_overlap=True)
    assert median_again == median


def test_checkpoint_resolution_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="pass --split"):
        split_checkpoint(str(tmp_path / "split{split}.safetensors"), None)
    with pytest.raises(CheckpointError, match="not found"):
        split_checkpoint(tmp_path / "nothing.safetensors", 0)
    with pytest.raises(CheckpointError, match="no best.safetensors"):
        split_checkpoint(tmp_path, 0)


def test_eval_cli_prints_a_table_json_and_predictions(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, labels = tiny_run
    runner = CliRunner()
    base = ["eval", "--checkpoint", str(run), "--dataset", "csv", "--csv", str(labels), "--split", "all",
            "--no-progress"]
    table = runner.invoke(app, [*base, "--crops", "grid1", "--which", "best"])
    assert table.exit_code == 0, table.output
    assert all(word in table.stdout for word in ("SRCC", "PLCC", "KRCC", "RMSE"))
    preds = tmp_path / "preds.csv"
    as_json = runner.invoke(app, [*base, "--format", "json", "--predictions", str(preds), "--crops", "random3"])
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert set(payload["checkpoints"]) == {"best", "last"} and payload["crops"] == "random3"  # selected and last
    assert [r["epoch"] for r in payload["checkpoints"]["last"]["results"]] == [1]
    expected = evaluate(run / "best.safetensors", "csv", csv=labels, split="all", crops="random3").metrics
    assert payload["results"][0]["srcc"] == pytest.approx(expected.srcc) and payload["results"][0]["n"] == 20
    assert len(preds.read_text().splitlines()) == 1 + 20
    bad = runner.invoke(app, [*base[:-3], "--crops", "4"])
    assert bad.exit_code != 0
    a_dir = runner.invoke(app, [*base, "--predictions", str(tmp_path)])  # refused before the evaluation
    assert a_dir.exit_code == 2 and "is a directory" in a_dir.output and "SRCC" not in a_dir.stdout


def test_an_exported_onnx_model_is_evaluated_the_same_way(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import torch

    from glia_edge.checkpoint import load_checkpoint
    from glia_edge.formats import set_onnx_meta

    run, labels = tiny_run
    model, meta = load_checkpoint(run / "best.safetensors")
    path = tmp_path / "tiny.onnx"
    size = meta.preprocess["crop_size"]
    torch.onnx.export(model, torch.rand(1, 3, size, size), str(path), input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    set_onnx_meta(proto, replace(meta, format="onnx"))
    onnx.save(proto, str(path))
    from_onnx = evaluate(path, "csv", csv=labels, split="all", crops=5)
    from_torch = evaluate(run / "best.safetensors", "csv", csv=labels, split="all", crops=5)
    assert [k for k, _, _ in from_onnx.predictions] == [k for k, _, _ in from_torch.predictions]
    np.testing.assert_allclose([p for *_, p in from_onnx.predictions], [p for *_, p in from_torch.predictions],
                               rtol=1e-4, atol=1e-3)
