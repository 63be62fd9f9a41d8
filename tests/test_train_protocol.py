"""Run-folder protocol of ``train`` and ``reproduce``: what a resume or a rerun may reuse, saves cut
short, concurrent runs, scales that must not see test labels, and bad settings as one-line errors."""
from __future__ import annotations

import csv
import fcntl
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from _data_fixtures import _cache, blur_labels  # noqa: F401  (pytest fixtures)
from _data_fixtures import PHOTOS, TINY_OVERRIDES
from glia_edge import train as train_module
from glia_edge.checkpoint import read_checkpoint_meta
from glia_edge.data.splits import make_splits
from glia_edge.errors import CheckpointError, OutputError
from glia_edge.train import TrainConfig, train

torch.set_num_threads(1)

TINY_CLI = ["--preset", "glia_vit_tiny", "--backbone-weights", "none", "--short-side", "64", "--epochs", "1",
            "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu", "--eval-crops", "grid1",
            *[f"--model-opt={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
              for k, v in TINY_OVERRIDES.items()]]


def tiny(out: Path, labels: Path, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(dataset="csv", csv=str(labels), preset="glia_vit_tiny", backbone_weights="none",
                      model_overrides=dict(TINY_OVERRIDES), short_side=64, epochs=2, batch_size=8, workers=0,
                      device="cpu", progress=False, output=str(out), splits_file=str(out.parent / "splits.json"),
                      eval_crops="grid1", max_steps=None)
    return replace(cfg, **changes)


def epoch_of(path: Path) -> int:
    return read_checkpoint_meta(path).training["epoch"]


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}


@pytest.fixture
def rising_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation SRCC that rises every epoch (so every epoch is ``best``), without scoring anything."""
    calls: list[int] = []

    def fake(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(1)
        return {"srcc": 0.1 * len(calls), "plcc": 0.5, "krcc": 0.3, "rmse": 1.0, "n": 4}

    monkeypatch.setattr(train_module, "_evaluate", fake)


def no_data(*args: object, **kwargs: object) -> None:
    raise AssertionError("the data was prepared although the run should have been refused first")


# -- D3: a resume that changes the data, split, seed or model is refused --------------------------------
@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory, blur_labels: Path) -> Path:
    out = tmp_path_factory.mktemp("short") / "run"
    train(tiny(out, blur_labels, epochs=1, max_steps=1))
    return out


@pytest.mark.parametrize("changes, named", [
    ({"seed": 1}, "seed 3407 -> 1"),
    ({"split": 1}, "split 0 -> 1"),
    ({"split_source": "loda"}, "split_source 'glia' -> 'loda'"),
    ({"model_overrides": {**TINY_OVERRIDES, "depth": 1}}, "model_overrides"),
    ({"limit": 5}, "limit None -> 5"),
])
def test_resume_with_other_data_split_seed_or_model_is_refused_before_the_data(
        short_run: Path, blur_labels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        changes: dict[str, Any], named: str) -> None:
    monkeypatch.setattr(train_module, "prepare_data", no_data)
    before = (short_run / "last.state.pt").stat().st_mtime_ns
    with pytest.raises(CheckpointError, match="trained with other settings") as err:
        train(tiny(short_run, blur_labels, resume=str(short_run), **changes))
    assert named in str(err.value) and "\n" not in str(err.value)
    assert (short_run / "last.state.pt").stat().st_mtime_ns == before


def test_resume_with_another_annotation_is_refused(short_run: Path, blur_labels: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "labels.csv"
    shutil.copyfile(blur_labels, other)
    monkeypatch.setattr(train_module, "prepare_data", no_data)
    with pytest.raises(CheckpointError, match=f"csv '{blur_labels.resolve()}' -> '{other.resolve()}'"):
        train(tiny(short_run, other, root=str(blur_labels.parent), resume=str(short_run)))


def test_resume_with_a_split_file_whose_split_differs_is_refused(short_run: Path, blur_labels: Path,
                                                                 tmp_path: Path) -> None:
    data = json.loads((short_run / "splits.json").read_text())
    part = data["splits"][0]
    part["train"][0], part["test"][0] = part["test"][0], part["train"][0]  # a test reference now trains
    (tmp_path / "moved.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="is not the split the run trained on"):
        train(tiny(short_run, blur_labels, resume=str(short_run), splits_file=str(tmp_path / "moved.json")))
    assert json.loads((short_run / "splits.json").read_text())["splits"][0]["test"] != part["test"]


def test_resume_warns_on_recipe_changes_and_extends_with_more_epochs(tmp_path: Path, blur_labels: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    train(tiny(out, blur_labels, epochs=1, max_steps=1))
    with caplog.at_level(logging.INFO):
        result = train(tiny(out, blur_labels, epochs=2, max_steps=2, lr=1e-3, batch_size=16, resume=str(out)))
    assert "recipe changed (lr 0.0003 -> 0.001; batch_size 8 -> 16)" in caplog.text
    assert "1 -> 2 epochs" in caplog.text and "--max-steps 1 -> 2" in caplog.text
    assert [r["epoch"] for r in result.history] == [1, 2] and epoch_of(out / "last.safetensors") == 2


def test_resume_into_another_output_is_not_reported_as_a_save_cut_short(tmp_path: Path, blur_labels: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    train(tiny(out, blur_labels, epochs=1, max_steps=1))
    with caplog.at_level(logging.INFO):
        train(tiny(tmp_path / "elsewhere", blur_labels, epochs=2, max_steps=2, resume=str(out)))
    assert "cut short" not in caplog.text and "written from the training state (epoch 1)" in caplog.text
    assert epoch_of(tmp_path / "elsewhere" / "last.safetensors") == 2


# -- D4: a save cut short is repaired from the training state --------------------------------------------
def test_a_state_from_before_states_held_weights_still_resumes(tmp_path: Path, blur_labels: Path) -> None:
    out = tmp_path / "run"
    train(tiny(out, blur_labels, epochs=1, max_steps=1))
    saved = torch.load(out / "last.state.pt", weights_only=False)
    for key in ("weights", "best_weights", "best_meta", "meta", "best_epoch", "protocol"):
        saved.pop(key)  # what an older glia-edge wrote; its checkpoints are in step
    torch.save(saved, out / "last.state.pt")
    result = train(tiny(out, blur_labels, epochs=2, max_steps=2, resume=str(out)))
    assert [r["epoch"] for r in result.history] == [1, 2] and epoch_of(out / "last.safetensors") == 2


def test_an_interrupt_after_last_is_written_resumes_exactly(tmp_path: Path, blur_labels: Path, rising_validation: None,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    straight = train(tiny(tmp_path / "straight", blur_labels))
    import glia_edge.atomic

    real, states = glia_edge.atomic.atomic_write, []

    def die_at_second_state(path: Path, write: Any) -> None:
        if path.name == "last.state.pt":
            states.append(path)
            if len(states) == 2:
                raise KeyboardInterrupt  # epoch 2: best and last written, the state not yet
        real(path, write)

    out = tmp_path / "cut"
    monkeypatch.setattr(glia_edge.atomic, "atomic_write", die_at_second_state)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(out, blur_labels))
    monkeypatch.setattr(glia_edge.atomic, "atomic_write", real)
    assert epoch_of(out / "last.safetensors") == 2  # ahead of the state, which still says epoch 1
    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)

    with caplog.at_level(logging.WARNING):
        resumed = train(tiny(out, blur_labels, resume=str(out)))
    a, b = trainable(straight.model), trainable(resumed.model)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert "a save was cut short" in caplog.text
    state = torch.load(out / "last.state.pt", weights_only=False)
    assert state["epoch"] == 2 and state["best_epoch"] == epoch_of(out / "best.safetensors") == 2
    assert read_checkpoint_meta(out / "best.safetensors").training["best_epoch"] == 2

    # A state written before states held weights cannot repair it: a clear refusal, not a silent mix.
    saved = torch.load(legacy / "last.state.pt", weights_only=False)
    for key in ("weights", "best_weights", "best_meta", "meta", "best_epoch", "protocol"):
        saved.pop(key)
    torch.save(saved, legacy / "last.state.pt")
    with pytest.raises(CheckpointError, match="a save was cut short.*no weights to repair it from"):
        train(tiny(legacy, blur_labels, resume=str(legacy)))


def test_a_best_written_ahead_of_the_state_is_put_back(tmp_path: Path, blur_labels: Path, rising_validation: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import glia_edge.checkpoint

    real, lasts = glia_edge.checkpoint.save_checkpoint, []

    def die_before_second_last(path: Path, model: Any, meta: Any) -> Path:
        if Path(path).name == "last.safetensors":
            lasts.append(path)
            if len(lasts) == 2:
                raise KeyboardInterrupt  # epoch 2: best written, last and state not yet
        return real(path, model, meta)

    out = tmp_path / "cut"
    monkeypatch.setattr(glia_edge.checkpoint, "save_checkpoint", die_before_second_last)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(out, blur_labels))
    monkeypatch.setattr(glia_edge.checkpoint, "save_checkpoint", real)
    assert epoch_of(out / "best.safetensors") == 2 and epoch_of(out / "last.safetensors") == 1

    train(tiny(out, blur_labels, epochs=1, resume=str(out)))  # nothing left to train: only the repair
    assert epoch_of(out / "best.safetensors") == 1
    from safetensors.torch import load_file

    best, last = load_file(str(out / "best.safetensors")), load_file(str(out / "last.safetensors"))
    assert best.keys() == last.keys() and all(torch.equal(best[k], last[k]) for k in best)


# -- D7: one training per run folder ---------------------------------------------------------------------
def test_a_second_training_into_a_busy_run_folder_is_refused(tmp_path: Path, blur_labels: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # another training holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        with monkeypatch.context() as patch:
            patch.setattr(train_module, "prepare_data", no_data)
            with pytest.raises(OutputError, match=f"{out}: another training is writing to this run folder "
                                                  r"\(pid 4242 on elsewhere\)"):
                train(tiny(out, blur_labels, epochs=1, max_steps=1))
    # Released (as when its process ends, crashed or not): the lock file left behind blocks nothing.
    result = train(tiny(out, blur_labels, epochs=1, max_steps=1))
    assert result.history and (out / "last.safetensors").is_file()
    assert not (out / ".lock").exists()  # a finished run leaves no lock file behind


# -- D5 / D1: what the checkpoint records about the set ----------------------------------------------------
def test_the_sigmoid_range_comes_from_the_training_labels_only(tmp_path: Path, blur_labels: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    test_refs = set(make_splits(list(PHOTOS))[0]["test"])
    rows = list(csv.DictReader(blur_labels.open()))
    for row in rows:
        row["path"] = str(blur_labels.parent / row["path"])
        if row["ref"] in test_refs:
            row["score"] = str(float(row["score"]) + 100)  # test labels reach 200: the head must not know
    folder = tmp_path / "set"
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.chdir(tmp_path)
    result = train(tiny(tmp_path / "run", Path("set/labels.csv"), epochs=1, max_steps=1,
                        model_overrides={**TINY_OVERRIDES, "score_head": "sigmoid"}))
    meta = read_checkpoint_meta(tmp_path / "run" / "last.safetensors")
    assert (meta.score["min"], meta.score["max"]) == (40.0, 100.0)
    assert float(result.model.score_max) == 100.0 and meta.training["score_range_from"] == "train"
    # D1: the annotation is recorded absolute, so eval from another folder recognises the set.
    assert meta.training["annotation"] == str((folder / "labels.csv").resolve())


# -- D9: bad settings are one-line errors ----------------------------------------------------------------
def run_cli(args: list[str]) -> Any:
    from glia_edge.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("extra, words", [
    (["--lr", "-1"], "--lr -1: the learning rate must be > 0"),
    (["--weight-decay", "-1"], "--weight-decay -1: must be >= 0"),
    (["--short-side", "32"], "--short-side 32: smaller than the model's 64-pixel crops"),
])
def test_cli_refuses_bad_recipe_values_in_one_line_before_the_data(extra: list[str], words: str, blur_labels: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "prepare_data", no_data)
    result = run_cli(["train", "--dataset", "csv", "--csv", str(blur_labels), *TINY_CLI, "--output",
                      str(tmp_path / "run"), *extra])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"error: {words}" + result.output.strip().split(words, 1)[1]]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_device_cuda_without_a_gpu_is_a_one_line_error(blur_labels: Path, tmp_path: Path) -> None:
    result = run_cli(["train", "--dataset", "csv", "--csv", str(blur_labels), *TINY_CLI, "--output",
                      str(tmp_path / "run"), "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: --device cuda: PyTorch sees no CUDA GPU here (use --device cpu or auto)"


def test_constant_training_labels_warn_and_stop_a_sigmoid_head(blur_labels: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    flat = tmp_path / "flat.csv"
    flat.write_text("".join(line.rsplit(",", 4)[0] + ",50," + line.split(",", 2)[2] + "\n" if i else line + "\n"
                            for i, line in enumerate(blur_labels.read_text().splitlines())))
    with caplog.at_level(logging.WARNING):  # before the CLI call below, which takes over the log handlers
        train(tiny(tmp_path / "linear", flat, root=str(blur_labels.parent), epochs=1, max_steps=1,
                   splits_file=str(tmp_path / "s.json")))
    assert "every training label is 50: the model cannot learn to rank images" in caplog.text
    result = run_cli(["train", "--dataset", "csv", "--csv", str(flat), "--root", str(blur_labels.parent), *TINY_CLI,
                      "--output", str(tmp_path / "run"), "--score-head", "sigmoid",
                      "--splits-file", str(tmp_path / "s.json")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "every training label is 50" in errors[0] and "--score-head linear" in errors[0]
    assert not (tmp_path / "run").exists()


# -- D2: reproduce never reuses a split trained with other settings ---------------------------------------
def _fake_score(opts: Any, run: Path, split: int) -> dict[str, Any]:
    best = {"srcc": 0.8, "plcc": 0.85, "krcc": 0.6, "rmse": 0.3, "epoch": 1, "failed": 0}
    return {"split": split, "crops": opts.eval_crops, "sizes": {"train": 16, "val": 4, "test": 4},
            "score": {"name": "MOS", "min": 40.0, "max": 100.0}, "best": best, "last": best}


def test_reproduce_refuses_a_folder_trained_with_other_settings(tmp_path: Path) -> None:
    from glia_edge.reproduce import ReproduceOptions, reproduce

    trained: list[int] = []
    opts = ReproduceOptions("csv", csv=str(tmp_path / "labels.csv"), output=str(tmp_path / "out"), splits=[0],
                            preset="glia_vit_tiny", epochs=2, batch_size=8)
    reproduce(opts, train_fn=lambda cfg: trained.append(cfg.split), score_fn=_fake_score)
    done = json.loads((tmp_path / "out" / "split0" / "done.json").read_text())
    assert done["protocol"]["epochs"] == 2 and done["protocol"]["csv"] == str((tmp_path / "labels.csv").resolve())
    reproduce(opts, train_fn=lambda cfg: trained.append(cfg.split), score_fn=_fake_score)
    assert trained == [0]  # same settings: the finished split is reused

    for changes, named in [({"epochs": 1}, "epochs 2 -> 1"), ({"seed": 7}, "seed 3407 -> 7"),
                           ({"preset": "glia_vit_nano", "output": opts.output}, "preset 'glia_vit_tiny' -> "),
                           ({"model_overrides": {"depth": 1}}, "model_overrides {} -> {'depth': 1}"),
                           ({"split_source": "loda"}, "split_source 'glia' -> 'loda'")]:
        other = replace(opts, **changes)
        with pytest.raises(OutputError, match="use another --output folder") as err:
            reproduce(other, train_fn=lambda cfg: trained.append(cfg.split), score_fn=_fake_score)
        assert named in str(err.value) and str(tmp_path / "out" / "split0") in str(err.value)
    assert trained == [0]

    # done.json from before the protocol was recorded: the training state's config speaks for it ...
    (tmp_path / "out" / "split0" / "done.json").write_text(json.dumps({"split": 0, "epochs": 2}))
    config = train_module.asdict(train_module.TrainConfig(dataset="csv", csv=opts.csv, preset=opts.preset, epochs=2,
                                                          batch_size=8, split=0, eval_crops=opts.eval_crops))
    torch.save({"epoch": 2, "config": config}, tmp_path / "out" / "split0" / "last.state.pt")
    with pytest.raises(OutputError, match="epochs 2 -> 1"):
        reproduce(replace(opts, epochs=1), train_fn=lambda cfg: trained.append(cfg.split), score_fn=_fake_score)
    reproduce(opts, train_fn=lambda cfg: trained.append(cfg.split), score_fn=_fake_score)
    # ... and with neither, the split cannot be checked: refused, never reused blindly.
    (tmp_path / "out" / "split0" / "last.state.pt").unlink()
    with pytest.raises(OutputError, match="no record of the settings"):
        reproduce(opts, train_fn=lambda cfg: trained.append(cfg.split), score_fn=_fake_score)
    assert trained == [0]


def test_reproduce_cli_refuses_other_settings_in_one_line_before_training(tmp_path: Path, blur_labels: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.reproduce import ReproduceOptions, split_protocol

    out = tmp_path / "out"
    first = ReproduceOptions("csv", csv=str(blur_labels), output=str(out), splits=[0, 1], epochs=2)
    (out / "split1").mkdir(parents=True)
    (out / "split1" / "done.json").write_text(json.dumps({"protocol": split_protocol(first, 1)}))
    monkeypatch.setattr(train_module, "train", lambda cfg: pytest.fail("trained split 0 before checking split 1"))
    result = run_cli(["reproduce", "csv", "--csv", str(blur_labels), "--output", str(out), "--splits", "0-1",
                      "--epochs", "3"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"error: {out / 'split1'}: trained with other settings (epochs 2 -> 3)" in result.output
