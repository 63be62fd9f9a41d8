"""Regressions from the training/evaluation review: duplicate spellings, run folders kept whole,
train/test overlap in eval, model options and recipe values checked up front, valid JSON (no NaN),
metrics on non-finite input, split ranges, CSV messages and progress bars under -q."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from _data_fixtures import TINY_OVERRIDES, make_blur_set
from glia_edge import evaluate as evaluate_module
from glia_edge import train as train_module
from glia_edge.cli import app
from glia_edge.data import load_dataset
from glia_edge.data.splits import create_splits
from glia_edge.errors import DatasetError, OutputError, TrainingError
from glia_edge.metrics import iqa_metrics, plcc, rmse
from glia_edge.run_state import best_epoch
from glia_edge.train import TrainConfig, train

torch.set_num_threads(1)
TINY_CLI = ["--preset", "glia_vit_tiny", "--backbone-weights", "none", "--short-side", "64", "--workers", "0",
            "--device", "cpu", "-b", "16", "--no-progress", *[f"--model-opt={k}={','.join(map(str, v))}"
                                                             if isinstance(v, tuple) else f"--model-opt={k}={v}"
                                                             for k, v in TINY_OVERRIDES.items()]]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path / "cache"))


def tiny_config(out: Path, labels: Path, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(dataset="csv", csv=str(labels), preset="glia_vit_tiny", backbone_weights="none",
                      model_overrides=dict(TINY_OVERRIDES), short_side=64, epochs=1, max_steps=2, batch_size=8,
                      workers=0, device="cpu", progress=False, output=str(out),
                      splits_file=str(out.parent / "splits.json"), eval_crops="grid1")
    return replace(cfg, **changes)


def strict_json(text: str) -> Any:
    """Python's json reads bare NaN; a JSON reader elsewhere does not."""
    def refuse(name: str) -> None:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def blur_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 photos x 4 blur levels, grouped by photo (labels.csv of the synthetic-set layout)."""
    return make_blur_set(tmp_path_factory.mktemp("blur"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, blur_labels: Path) -> Path:
    """A tiny run trained on split 0 of ``blur_labels`` (one epoch, two steps)."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLIA_EDGE_CACHE", str(base / "cache"))
        train(tiny_config(base / "run", blur_labels))
    return base / "run"


def _no_data(*args: object, **kwargs: object) -> None:
    pytest.fail("the data was prepared before the check")


# -- 1: one file spelled two ways is one image ------------------------------------------------------

def test_one_image_spelled_two_ways_is_merged_into_one_record(tmp_path: Path) -> None:
    make_blur_set(tmp_path, photos=("astronaut", "coffee"), size=(32, 32))  # images/<photo>-blur-<level>.png
    first = "images/astronaut-blur-0.png"
    absolute = str((tmp_path / "images" / "coffee-blur-0.png").resolve())
    (tmp_path / "dup.csv").write_text(f"path,score\n{first},1.0\n./{first},5.0\nimages//coffee-blur-0.png,2\n"
                                      f"{absolute},4\nimages/astronaut-blur-1.png,3\n")
    dataset = load_dataset("csv", csv=tmp_path / "dup.csv")
    by_key = {r.key: r.score for r in dataset.records}
    assert by_key == {first: 3.0, "images/coffee-blur-0.png": 3.0, "images/astronaut-blur-1.png": 3.0}
    splits = create_splits(dataset)  # a split unit per image: the two spellings can no longer part
    for split in splits.splits:
        assert sum(first in part for part in split.values()) == 1


# -- 2: an existing run is never replaced by accident ------------------------------------------------

def test_a_new_run_into_a_run_folder_is_refused_before_the_data(tmp_path: Path, blur_labels: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    train(tiny_config(tmp_path / "run", blur_labels))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    monkeypatch.setattr(train_module, "prepare_data", _no_data)
    with pytest.raises(OutputError, match="holds an earlier run.*--overwrite"):
        train(tiny_config(tmp_path / "run", blur_labels))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before


def test_overwrite_keeps_the_old_run_whole_until_the_new_one_commits(tmp_path: Path, blur_labels: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    train(tiny_config(tmp_path / "run", blur_labels))
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert before["metrics.jsonl"]

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C in epoch 1's validation, before the first save

    monkeypatch.setattr(train_module, "_evaluate", interrupted)
    other_split = tmp_path / "other" / "splits.json"  # a split file that differs from the run's copy
    other_split.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "run", blur_labels, overwrite=True, splits_file=str(other_split),
                          split_source="loda"))
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before  # metrics not truncated, splits.json not replaced


def test_cli_refuses_a_run_folder_in_one_line(tmp_path: Path, blur_labels: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    result = CliRunner().invoke(app, ["train", "-d", "csv", "--csv", str(blur_labels), "-o", str(tmp_path / "run"),
                                      *TINY_CLI])
    assert result.exit_code == 2 and "holds an earlier run" in result.output, result.output
    assert isinstance(result.exception, SystemExit)  # a one-line error, not a traceback


# -- 3: eval refuses test parts that hold the run's training images --------------------------------

def _eval(run: Path, labels: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["eval", "-c", str(run), "-d", "csv", "--csv", str(labels), "--which", "best",
                                    "--crops", "grid1", "--no-progress", "-f", "json", *extra])


def test_eval_refuses_other_splits_of_the_set_the_run_trained_on(trained_run: Path, blur_labels: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = evaluate_module.score_dataset
    monkeypatch.setattr(evaluate_module, "score_dataset", lambda *a, **k: pytest.fail("scored before the check"))
    result = _eval(trained_run, blur_labels, "--splits", "0-2")
    assert result.exit_code == 2 and "--allow-train-overlap" in result.output, result.output
    assert "trained on csv split 0" in result.output
    monkeypatch.setattr(evaluate_module, "score_dataset", real)
    own = _eval(trained_run, blur_labels, "--split", "0")
    assert own.exit_code == 0, own.output
    allowed = _eval(trained_run, blur_labels, "--splits", "0-1", "--allow-train-overlap")
    assert allowed.exit_code == 0, allowed.output
    assert len(strict_json(allowed.stdout)["results"]) == 2


# -- 4 / 8: settings that cannot work fail before any data work, in one line ------------------------

@pytest.mark.parametrize("option, value", [("score_head", "bogus"), ("adapter_every", 0), ("adapter_heads", 3),
                                           ("adapter_dim", 0), ("head_hidden", -1), ("local_channels", (8, 16)),
                                           ("local_stream", "bogus"), ("backbone", "bogus")])
def test_bad_model_options_are_refused_before_the_data(option: str, value: object, tmp_path: Path,
                                                       blur_labels: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "prepare_data", _no_data)
    overrides = {**TINY_OVERRIDES, option: value}
    with pytest.raises(TrainingError, match=f"model option {option}="):
        train(tiny_config(tmp_path / "run", blur_labels, model_overrides=overrides))


@pytest.mark.parametrize("args, words", [(["--score-head", "bogus"], "score_head='bogus'"),
                                         (["--model-opt", "adapter_every=0"], "adapter_every=0"),
                                         (["--model-opt", "local_channels=8,16"], "local_channels=(8, 16)")])
def test_cli_refuses_bad_model_options_without_a_traceback(args: list[str], words: str, tmp_path: Path,
                                                           blur_labels: Path) -> None:
    result = CliRunner().invoke(app, ["train", "-d", "csv", "--csv", str(blur_labels), "-o", str(tmp_path / "run"),
                                      *TINY_CLI, *args])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not isinstance(result.exception, (ValueError, ZeroDivisionError, RuntimeError))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes, words", [({"l1_weight": -5.0}, "--l1-weight -5"),
                                            ({"l1_weight": math.nan}, "--l1-weight nan"),
                                            ({"rank_weight": math.inf}, "--rank-weight inf"),
                                            ({"cross_rank_weight": -1.0}, "--cross-rank-weight -1"),
                                            ({"lr": math.nan}, "--lr nan"),
                                            ({"weight_decay": math.inf}, "--weight-decay inf")])
def test_loss_weights_and_recipe_values_must_be_finite(changes: dict[str, float], words: str, tmp_path: Path,
                                                       blur_labels: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "prepare_data", _no_data)
    with pytest.raises(TrainingError, match=words.replace("-", r"\-")):
        train(tiny_config(tmp_path / "run", blur_labels, **changes))


# -- 5: JSON outputs hold null, never a bare NaN ------------------------------------------------------

def test_dumps_json_writes_null_for_non_finite_values() -> None:
    from glia_edge.meta import dumps_json

    text = dumps_json({"a": math.nan, "b": [math.inf, 1.5], "c": np.float64("nan"), "d": np.int64(3)})
    assert strict_json(text) == {"a": None, "b": [None, 1.5], "c": None, "d": 3}


def test_training_files_hold_null_for_undefined_metrics(tmp_path: Path, blur_labels: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    undefined = {k: math.nan for k in ("srcc", "plcc", "krcc", "rmse")}
    monkeypatch.setattr(train_module, "_evaluate", lambda *a, **k: {**undefined, "n": 2})
    train(tiny_config(tmp_path / "run", blur_labels))
    out = tmp_path / "run"
    rows = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["val_srcc"] is None
    for name in ("last.json", "best.json"):
        assert strict_json((out / name).read_text())["training"]["metrics"]["val_srcc"] is None
    # Readers treat null as they treated NaN: it never wins the best epoch.
    assert best_epoch([{"epoch": 1, "val_srcc": None}, {"epoch": 2, "val_srcc": 0.5}]) == 2
    assert best_epoch([{"epoch": 1, "val_srcc": None}]) == 1


def test_eval_json_on_constant_scores_is_valid_json(trained_run: Path, tmp_path: Path) -> None:
    labels = make_blur_set(tmp_path / "flat", photos=("astronaut", "coffee"), size=(64, 64))
    text = labels.read_text().splitlines()
    rows = [line.split(",") for line in text[1:]]
    labels.write_text(text[0] + "\n" + "".join(f"{r[0]},50,{','.join(r[2:])}\n" for r in rows))
    result = _eval(trained_run, labels, "--split", "all")
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["results"][0]["srcc"] is None


def test_reproduce_summary_reads_null_metrics_as_nan() -> None:
    from glia_edge.reproduce import summarise

    metrics = {"srcc": None, "plcc": 0.5, "krcc": None, "rmse": 1.0}
    rows = summarise("csv", [{"best": metrics, "last": metrics}, {"best": {**metrics, "srcc": 0.8}, "last": metrics}])
    assert rows[0].plcc == 0.5 and math.isnan(rows[1].srcc)


# -- 6: metrics on non-finite input ---------------------------------------------------------------

@pytest.mark.parametrize("fn", [iqa_metrics, plcc, rmse])
def test_metrics_refuse_non_finite_values_by_count(fn: Any, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"1 prediction\(s\) and 0 score\(s\) of 4 are NaN or infinite"):
        fn([1, math.nan, 3, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"0 prediction\(s\) and 2 score\(s\)"):
        fn([1, 2, 3, 4], [math.inf, 2, math.nan, 4])
    assert "LAPACK" not in capfd.readouterr().err


# -- 7: split ranges are checked before anything is scored ----------------------------------------

def test_eval_checks_every_split_before_scoring(trained_run: Path, blur_labels: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, "score_dataset", lambda *a, **k: pytest.fail("scored before the check"))
    result = _eval(trained_run, blur_labels, "--splits", "0-99")
    assert result.exit_code == 2 and "split 10 does not exist" in result.output, result.output


# -- 9: CSV messages name the real problem ---------------------------------------------------------

@pytest.mark.parametrize("text, words", [("path\na.png\nb.png\n", "has one column 'path'; needs an image column"),
                                         ("", "the file is empty"), ("\n\n", "the file is empty")])
def test_csv_errors_name_the_real_problem(text: str, words: str, tmp_path: Path) -> None:
    (tmp_path / "set.csv").write_text(text)
    with pytest.raises(DatasetError, match=words) as info:
        load_dataset("csv", csv=tmp_path / "set.csv")
    assert "delimiter" not in str(info.value) and "'pa', 'h'" not in str(info.value)


# -- 10: -q turns the progress bars off --------------------------------------------------------------

def test_quiet_turns_progress_bars_off_in_train_and_eval(trained_run: Path, blur_labels: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def fake_train(cfg: TrainConfig) -> Any:
        seen.append(cfg.progress)
        raise TrainingError("stop here")

    def fake_score(artifact: Path, dataset: Any, **kwargs: Any) -> np.ndarray:
        seen.append(kwargs["progress"])
        return np.arange(len(dataset.records), dtype=float)

    import glia_edge.cli.common as common

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(evaluate_module, "score_dataset", fake_score)
    runner = CliRunner()
    base = ["train", "-d", "csv", "--csv", str(blur_labels), "-o", str(tmp_path / "new"), *TINY_CLI]
    base.remove("--no-progress")
    for terminal in (True, False):  # off a terminal (a log file, journald) no bars either: no \r lines
        monkeypatch.setattr(common, "stderr_is_terminal", lambda: terminal)
        for quiet in (["-q"], []):
            runner.invoke(app, [*quiet, *base])
            runner.invoke(app, [*quiet, "eval", "-c", str(trained_run), "-d", "csv", "--csv", str(blur_labels),
                                "--which", "best", "--crops", "grid1"])
    assert seen == [False, False, True, True, False, False, False, False]


def test_a_float_image_is_skipped_up_front_with_its_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # It passed the header check and then warned once per crop per epoch; the decoder's own rule
    # (preprocess.mode_problem) now refuses it when the set is checked.
    from PIL import Image

    from glia_edge.data.base import validate

    images = tmp_path / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / f"ok{i}.png")
    Image.fromarray(rng.random((24, 24)).astype(np.float32), "F").save(images / "float.tif")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\n" + "".join(f"img/ok{i}.png,{i + 1}\n" for i in range(3)) + "img/float.tif,2\n")
    with caplog.at_level("WARNING"):
        kept = validate(load_dataset("csv", csv=str(labels)))
    assert len(kept.records) == 3
    assert "float.tif" in caplog.text and "unsupported image mode 'F' (32-bit float)" in caplog.text
