"""Data protocol regressions: which split eval scores, split files and names, CSV quirks, score ranges, crops."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _data_fixtures import make_blur_set, make_koniq, texture, write_images
from glia_edge.cli import app
from glia_edge.data import load_dataset, validate
from glia_edge.data.crop_protocol import CROP_SEED, parse_crops
from glia_edge.data.splits import (OFFICIAL, SplitFile, create_splits, make_splits, parse_split_range, select,
                                   split_parts, write_splits)
from glia_edge.distributed import DistContext
from glia_edge.errors import DatasetError
from glia_edge.evaluate import default_split, held_out
from glia_edge.meta import ArtifactMeta
from glia_edge.train_config import TrainConfig
from glia_edge.train_data import prepare_data

PHOTOS5 = ("astronaut", "coffee", "chelsea", "rocket", "camera")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def blur_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 photos x 4 blur levels, small: a csv set grouped by photo (labels.csv)."""
    return make_blur_set(tmp_path_factory.mktemp("set") / "data", photos=PHOTOS5, size=(48, 40))


def _meta(**training: object) -> ArtifactMeta:
    return ArtifactMeta(preset="glia_vit_nano", model_config={}, preprocess={}, score={}, training=dict(training))


def _run_folder(folder: Path, labels: Path, annotation: str, split: int = 3) -> tuple[Path, ArtifactMeta]:
    """A run folder as training leaves it (best.safetensors + splits.json of ``labels``)."""
    folder.mkdir(parents=True)
    write_splits(create_splits(load_dataset("csv", csv=labels)), folder / "splits.json")
    artifact = folder / "best.safetensors"
    artifact.touch()
    return artifact, _meta(dataset="csv", annotation=annotation, split=split, splits_file="splits.json")


# -- D1: which split eval scores by default ------------------------------------------------------

def test_eval_from_another_folder_defaults_to_the_split_the_run_trained_on(
        blur_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact, meta = _run_folder(tmp_path / "run", blur_set, annotation="data/labels.csv")  # typed relative
    monkeypatch.chdir(tmp_path)  # the relative path means nothing from here
    assert default_split(meta, load_dataset("csv", csv=blur_set), artifact) == 3


def test_a_moved_set_is_still_the_one_the_run_trained_on(blur_set: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(blur_set.parent, moved)
    artifact, meta = _run_folder(tmp_path / "run", blur_set, annotation=str(tmp_path / "gone" / "labels.csv"))
    dataset = load_dataset("csv", csv=moved / "labels.csv")
    assert default_split(meta, dataset, artifact) == 3
    test = held_out(dataset, 3, artifact, meta)  # the run's own split file, not a new draw
    assert {r.ref for r in test.records} == set(create_splits(dataset).splits[3]["test"])


def test_an_absolute_annotation_path_matches_without_a_split_file(blur_set: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"  # an exported artifact: no splits.json beside it
    meta = _meta(dataset="csv", annotation=str(blur_set.resolve()), split=2)
    assert default_split(meta, load_dataset("csv", csv=blur_set), artifact) == 2


def test_all_of_a_same_named_set_not_matched_to_the_run_warns(blur_set: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    other = make_blur_set(tmp_path / "other", photos=PHOTOS5[:4], size=(48, 40))  # another csv set
    artifact, meta = _run_folder(tmp_path / "run", blur_set, annotation="labels.csv")
    dataset = load_dataset("csv", csv=other)
    assert default_split(meta, dataset, artifact) == "all"
    with caplog.at_level(logging.WARNING):
        assert len(held_out(dataset, "all", artifact, meta).records) == len(dataset.records)
    assert "training images are included" in caplog.text and str(other) in caplog.text


def test_eval_titles_a_split_all_table_all_images(tiny_checkpoint: Path, blur_set: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "-c", str(tiny_checkpoint), "-d", "csv", "--csv", str(blur_set),
                                      "--split", "all", "--crops", "grid1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "csv all images" in result.stdout and "test part" not in result.stdout


# -- D6 / D9: split names and files eval is given ------------------------------------------------

def test_eval_refuses_a_split_file_that_does_not_exist(tiny_checkpoint: Path, blur_set: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "-c", str(tiny_checkpoint), "-d", "csv", "--csv", str(blur_set),
                                      "--split", "0", "--splits-file", "nonexist.json", "--no-progress"])
    assert result.exit_code == 2 and "split file not found: nonexist.json" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "nonexist.json").exists()


@pytest.mark.parametrize("text", ["a-b", "1-x", "-1", "9-0"])
def test_a_malformed_split_range_is_a_one_line_error(text: str) -> None:
    with pytest.raises(DatasetError, match="split range"):
        parse_split_range(text)
    result = CliRunner().invoke(app, ["eval", "-c", "nowhere", "-d", "csv", "--splits", text])
    assert result.exit_code == 2 and result.output.startswith("error:") and "split range" in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- D8: an official split without a validation part ---------------------------------------------

def test_an_official_split_without_validation_gets_a_seeded_one(tmp_path: Path) -> None:
    names = [f"i{k}.png" for k in range(10)]
    write_images(tmp_path, names, size=(32, 32))
    rows = [f"{n},{k},{'train' if k < 7 else 'test'}" for k, n in enumerate(names)]
    (tmp_path / "labels.csv").write_text("path,score,set\n" + "\n".join(rows) + "\n")
    ds = load_dataset("csv", csv=tmp_path / "labels.csv")
    splits = create_splits(ds)
    parts = select(ds, splits, OFFICIAL)
    train, val = ({r.key for r in parts[p].records} for p in ("train", "val"))
    assert len(val) == 1 and not train & val and len(train | val) == 7
    assert split_parts(splits, OFFICIAL) == split_parts(create_splits(ds), OFFICIAL)  # repeatable


def test_numbered_splits_and_their_validation_parts_are_unchanged() -> None:
    groups = [f"img{i:03d}" for i in range(30)]
    drawn = make_splits(groups)  # digest of the draw before the official-seed change
    assert hashlib.sha256(json.dumps(drawn).encode()).hexdigest() == \
        "4cb8c289975f1e6d89e13e493004d1bab54601981d4bdb4d65b430144ee5d671"
    # a split stored without "val" (older files, LoDa's) is carved as before: seed [3407, index, 1]
    stored = SplitFile("csv", "image", 3407, 0.8, "x", [{"train": drawn[4]["train"] + drawn[4]["val"],
                                                         "test": drawn[4]["test"]}])
    assert split_parts(stored, 0)["val"] == ["img011", "img028"]


# -- D11 / D12: CSV quirks -----------------------------------------------------------------------

def _csv_set(folder: Path, text: str) -> Path:
    write_images(folder / "img", [f"a{i}.png" for i in range(3)], size=(32, 32))
    (folder / "labels.csv").write_text(text, encoding="utf-8")
    return folder / "labels.csv"


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    labels = _csv_set(tmp_path, "\ufeffpath,score\nimg/a0.png,1\nimg/a1.png,2\nimg/a2.png,3\n")
    ds = validate(load_dataset("csv", csv=labels))
    assert [r.key for r in ds.records] == ["img/a0.png", "img/a1.png", "img/a2.png"]


def test_windows_separators_are_read_as_slashes_unless_the_name_exists(tmp_path: Path) -> None:
    labels = _csv_set(tmp_path, "path,score\nimg\\a0.png,1\nimg\\a1.png,2\nimg\\a2.png,3\nodd\\name.png,4\n")
    texture(9, (32, 32)).save(tmp_path / "odd\\name.png")  # on POSIX a backslash is a legal name character
    ds = validate(load_dataset("csv", csv=labels))
    assert [r.key for r in ds.records] == ["img/a0.png", "img/a1.png", "img/a2.png", "odd\\name.png"]


def test_duplicate_rows_are_kept_once_with_their_mean_score(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    labels = _csv_set(tmp_path, "path,score\nimg/a0.png,1\nimg/a1.png,2\nimg/a0.png,5\nimg/a2.png,3\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("csv", csv=labels)
    assert [(r.key, r.score) for r in ds.records] == [("img/a0.png", 3.0), ("img/a1.png", 2.0), ("img/a2.png", 3.0)]
    warned = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert len(warned) == 1 and "1 image(s)" in warned[0] and "img/a0.png with scores 1, 5" in warned[0]



def test_every_reader_merges_duplicate_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_koniq(tmp_path / "koniq", n=8)
    sets = root / "koniq10k_distributions_sets.csv"
    lines = sets.read_text().splitlines()
    sets.write_text("\n".join([*lines, lines[1]]) + "\n")  # the first image listed twice
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("koniq", root)
    assert len(ds.records) == 8 and len({r.key for r in ds.records}) == 8
    assert any("1 image(s) listed more than once" in r.getMessage() for r in caplog.records)

# -- D5 / D13: what training takes from the data ------------------------------------------------

def test_a_measured_range_is_not_a_declared_scale(blur_set: Path, tmp_path: Path) -> None:
    csv_set = load_dataset("csv", csv=blur_set)
    assert not csv_set.range_declared
    part = csv_set.with_records(r for r in csv_set.records if 40 <= r.score <= 80)
    assert (part.score_spec_of().min, part.score_spec_of().max) == (40.0, 80.0)
    given = load_dataset("csv", csv=blur_set, score_range=(0.0, 100.0))
    assert given.range_declared and given.with_records(part.records).score_spec_of().max == 100.0
    koniq = load_dataset("koniq", make_koniq(tmp_path / "koniq"))
    assert koniq.range_declared and koniq.with_records(koniq.records[:3]).score_spec_of().max == 100.0


def _prepared(labels: Path, tmp_path: Path, **options: object):
    cfg = TrainConfig(dataset="csv", csv=str(labels), split=0, splits_file=str(tmp_path / "splits.json"),
                      short_side=40, workers=0, progress=False, **options)
    return prepare_data(cfg, DistContext(device=torch.device("cpu")), 32)


def test_training_range_of_a_csv_set_comes_from_its_training_part(tmp_path: Path) -> None:
    labels = make_blur_set(tmp_path / "data", photos=PHOTOS5, size=(48, 40))
    rows = labels.read_text().splitlines()  # the test part's pristine photo gets a label out of range
    test_ref = create_splits(load_dataset("csv", csv=labels)).splits[0]["test"][0]
    labels.write_text("\n".join(rows[:1] + [r.replace(",100,", ",1000,") if f",{test_ref}," in r else r
                                            for r in rows[1:]]) + "\n")
    data = _prepared(labels, tmp_path)
    scores = data.train.scores()
    assert (data.score.min, data.score.max) == (min(scores), max(scores)) and data.score.max < 1000
    assert data.score_range_from == "train"


def test_validation_crops_use_the_protocol_seed_not_the_training_seed(blur_set: Path, tmp_path: Path) -> None:
    data = _prepared(blur_set, tmp_path, seed=1, eval_crops="random3")
    assert data.eval_crops == parse_crops("random3") and data.eval_crops.seed == CROP_SEED
