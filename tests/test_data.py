"""Dataset loaders on miniature trees of the real releases, bad-file handling, splits, torch views."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _data_fixtures import make_blur_set, make_kadid, make_koniq, make_livec, make_spaq, texture, write_images
from glia_edge.data import DATASETS, load_dataset, validate
from glia_edge.data.splits import (create_splits, load_or_create_splits, make_splits, parse_split, parse_split_range,
                                   select, split_parts)
from glia_edge.data.torch_dataset import EvalCrops, TrainCrops, collate_skip_failed
from glia_edge.errors import DatasetError
from glia_edge.preprocess import PreprocessConfig, preprocess


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path / "cache"))


def test_table_lists_every_set() -> None:
    assert set(DATASETS) == {"koniq", "livec", "spaq", "kadid", "csv"}
    assert DATASETS["livec"].crops_per_image == 5 and DATASETS["koniq"].crops_per_image == 3
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("tid2013", "/nowhere")


def test_koniq_sets_csv_gives_0_100_scale_and_official_split(tmp_path: Path) -> None:
    ds = load_dataset("koniq", make_koniq(tmp_path, n=20))
    assert len(ds) == 20 and ds.score.name == "MOS" and (ds.score.min, ds.score.max) == (0.0, 100.0)
    assert all(r.path.parent.name == "1024x768" and r.path.is_file() for r in ds.records)
    parts = select(ds, create_splits(ds), "official")
    assert {k: len(v) for k, v in parts.items()} == {"train": 14, "val": 2, "test": 4}


def test_koniq_download_csv_gives_1_5_scale(tmp_path: Path) -> None:
    ds = load_dataset("koniq", make_koniq(tmp_path, n=10, with_sets=False))
    assert (ds.score.min, ds.score.max) == (1.0, 5.0) and all(1 <= s <= 5 for s in ds.scores())
    with pytest.raises(DatasetError, match="no official split"):
        split_parts(create_splits(ds), "official")


def test_livec_reads_mat_files_and_drops_the_7_training_images(tmp_path: Path) -> None:
    ds = load_dataset("livec", make_livec(tmp_path, n=12))
    assert len(ds) == 12
    assert [r.key for r in ds.records][:2] == ["10.JPG", "11.JPG"]
    assert not any(r.key.startswith("t") for r in ds.records)
    assert all(r.path.is_file() for r in ds.records) and ds.score.max == 100.0


def test_spaq_resizes_once_into_a_cache_with_exif_orientation(tmp_path: Path) -> None:
    root = make_spaq(tmp_path / "spaq", n=4, size=(480, 400))
    rotated = texture(9, (480, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the decoded photo is portrait
    rotated.save(root / "TestImage" / "00002.jpg", exif=exif)
    ds = load_dataset("spaq", root)
    assert len(ds) == 4 and ds.score.name == "MOS"
    sizes = {r.key: Image.open(r.path).size for r in ds.records}
    assert sizes["00001.jpg"] == (461, 384) and sizes["00002.jpg"] == (384, 461)
    assert all(r.path.suffix == ".png" and "spaq" in r.path.parts for r in ds.records)
    stamp = ds.records[0].path.stat().st_mtime_ns
    again = load_dataset("spaq", root)
    assert again.records[0].path.stat().st_mtime_ns == stamp  # reused, not rewritten


def test_spaq_corrupt_photo_is_reported_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_spaq(tmp_path / "spaq", n=4)
    (root / "TestImage" / "00003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with caplog.at_level(logging.WARNING):
        ds = validate(load_dataset("spaq", root))
    assert len(ds) == 3 and "00003.jpg" in caplog.text


def test_kadid_records_distorted_images_grouped_by_reference(tmp_path: Path) -> None:
    ds = load_dataset("kadid", make_kadid(tmp_path, refs=6, types=2, levels=2))
    assert len(ds) == 24 and ds.has_refs and ds.score.name == "DMOS" and ds.score.higher_is_better
    assert {r.ref for r in ds.records} == {f"I{i:02d}.png" for i in range(1, 7)}
    splits = create_splits(ds)
    assert splits.by == "ref" and len(splits.splits) == 10
    for i in range(10):
        parts = select(ds, splits, i)
        train_refs, test_refs = {r.ref for r in parts["train"].records}, {r.ref for r in parts["test"].records}
        val_refs = {r.ref for r in parts["val"].records}
        assert not train_refs & test_refs and not val_refs & (train_refs | test_refs)
        assert (len(train_refs), len(val_refs), len(test_refs)) == (4, 1, 1)  # 80/20, validation from train


def test_csv_reads_the_synthetic_labels_file_relative_to_its_folder(tmp_path: Path) -> None:
    labels = make_blur_set(tmp_path / "synth", photos=("astronaut", "coffee", "chelsea"), size=(64, 48))
    ds = load_dataset("csv", csv=labels)
    assert len(ds) == 12 and ds.has_refs and ds.score.name == "score"
    assert (ds.score.min, ds.score.max) == (40.0, 100.0) and ds.score.higher_is_better
    assert all(r.path.is_file() for r in ds.records)
    assert load_dataset("csv", root=labels.parent).source == str(labels)  # labels.csv found in --root


def test_csv_rows_without_a_finite_score_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    labels = make_blur_set(tmp_path / "synth", photos=("astronaut", "coffee", "chelsea"), size=(64, 48))
    lines = labels.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("score")
    for i, bad in zip((1, 2, 3), ("inf", "-inf", "nan")):  # inf made the label range (and the loss) inf
        cells = lines[i].split(",")
        cells[col] = bad
        lines[i] = ",".join(cells)
    labels.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("csv", csv=labels)
    assert len(ds) == 9 and np.isfinite(ds.score.max) and np.isfinite(ds.score.min)
    assert "3 row(s) without a finite numeric score" in caplog.text


def test_csv_reads_pyiqa_meta_info_columns(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", ["I01.png", "I01_01_01.png", "I02.png", "I02_01_01.png"])
    meta = tmp_path / "meta_info_KADID10kDataset.csv"
    meta.write_text("ref_name,dist_name,dmos,std\nI01.png,I01_01_01.png,4.5,0.3\nI02.png,I02_01_01.png,2.1,0.4\n")
    ds = load_dataset("csv", root=tmp_path / "imgs", csv=meta)
    assert [r.key for r in ds.records] == ["I01_01_01.png", "I02_01_01.png"]
    assert [r.ref for r in ds.records] == ["I01.png", "I02.png"] and ds.score.name == "DMOS"
    nr = tmp_path / "meta_info_nr.csv"
    nr.write_text("img_name,mos,std\nI01.png,61.2,9.1\nI02.png,40.0,8.0\n")
    flipped = load_dataset("csv", root=tmp_path / "imgs", csv=nr, higher_is_better=False)
    assert flipped.score.name == "MOS" and not flipped.score.higher_is_better and not flipped.has_refs


def test_bad_files_are_reported_with_path_and_reason_and_skipped(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, ["a.png", "b.png", "c.png"])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is text, not a picture")
    (tmp_path / "labels.csv").write_text("path,score\na.png,1\nb.png,2\nc.png,3\nempty.jpg,4\nnotes.jpg,5\n"
                                         "missing.png,6\nd.png,not-a-number\n")
    with caplog.at_level(logging.WARNING):
        ds = validate(load_dataset("csv", root=tmp_path))
    assert sorted(r.key for r in ds.records) == ["a.png", "b.png", "c.png"]
    text = caplog.text
    assert "empty.jpg: empty file" in text and "notes.jpg: not an image" in text
    assert "missing.png: file not found" in text and "without a finite numeric score" in text


def test_a_root_without_usable_images_stops_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,score\nx.jpg,1\ny.jpg,2\n")
    with pytest.raises(DatasetError, match="no usable images"):
        validate(load_dataset("csv", root=tmp_path))
    (tmp_path / "labels.csv").write_text("path,score\n")
    with pytest.raises(DatasetError, match="lists no images"):
        load_dataset("csv", root=tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("koniq", tmp_path / "nowhere")
    koniq = make_koniq(tmp_path / "k", n=3)
    (koniq / "koniq10k_distributions_sets.csv").unlink()
    with pytest.raises(DatasetError, match="annotation CSV not found"):
        load_dataset("koniq", koniq)


def test_ten_seeded_80_20_splits_saved_and_reloaded(tmp_path: Path) -> None:
    groups = [f"img{i:03d}" for i in range(50)]
    splits = make_splits(groups)
    assert len(splits) == 10 and splits == make_splits(groups)  # seeded: repeatable
    assert all((len(s["train"]), len(s["val"]), len(s["test"])) == (36, 4, 10) for s in splits)
    assert all(set(s["train"]).isdisjoint(s["test"]) and set(s["val"]).isdisjoint(set(s["train"]) | set(s["test"]))
               for s in splits)
    assert len({tuple(s["test"]) for s in splits}) == 10  # the splits differ
    labels = make_blur_set(tmp_path / "set", photos=("astronaut", "coffee", "chelsea", "rocket", "camera"),
                           size=(64, 48))
    ds = load_dataset("csv", csv=labels)
    file = tmp_path / "splits.json"
    first, path = load_or_create_splits(ds, file)
    assert path == file and json.loads(file.read_text())["by"] == "ref"
    again, _ = load_or_create_splits(ds, file)
    assert again.splits == first.splits
    other = ds.with_records(ds.records[:-5])  # a different annotation must not reuse the file
    with pytest.raises(DatasetError, match="different annotation"):
        load_or_create_splits(other, file)


def test_split_names_parse() -> None:
    assert parse_split("3") == 3 and parse_split("official") == "official" and parse_split("ALL") == "all"
    assert parse_split_range("0-9") == list(range(10)) and parse_split_range("0,2, 5") == [0, 2, 5]
    with pytest.raises(DatasetError):
        parse_split("three")


def test_train_crops_are_random_per_epoch_and_repeatable(tmp_path: Path) -> None:
    labels = make_blur_set(tmp_path, photos=("astronaut", "coffee"), size=(96, 80))
    ds = load_dataset("csv", csv=labels)
    cfg = PreprocessConfig(short_side=72, crop_size=64)
    data = TrainCrops(ds.records, cfg, crops_per_image=3, seed=5, score_mean=70.0, score_std=20.0)
    assert len(data) == 3 * len(ds)
    crop, target, index = data[4]
    assert crop.shape == (3, 64, 64) and crop.dtype == torch.float32 and 0 <= float(crop.min()) <= float(crop.max()) <= 1
    assert index == 1 and target.item() == pytest.approx((ds.records[1].score - 70.0) / 20.0)
    assert torch.equal(data[4][0], crop)  # same (seed, epoch, index): same crop
    assert not torch.equal(data[3][0], crop)  # another crop of the same image
    data.set_epoch(1)
    assert not torch.equal(data[4][0], crop)


def test_eval_crops_match_the_shared_preprocessing(tmp_path: Path) -> None:
    labels = make_blur_set(tmp_path, photos=("astronaut",), size=(96, 80))
    ds = load_dataset("csv", csv=labels)
    cfg = PreprocessConfig(short_side=72, crop_size=64)
    crops, score, index = EvalCrops(ds.records, cfg, crops=5)[2]
    assert crops.shape == (5, 3, 64, 64) and index == 2 and score.item() == ds.records[2].score
    np.testing.assert_array_equal(crops.numpy(), preprocess(ds.records[2].path, cfg, crops=5))


def test_a_file_failing_inside_getitem_costs_one_sample(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, ["a.jpg", "b.jpg"], size=(80, 80))
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 3])  # header fine, pixels truncated
    (tmp_path / "labels.csv").write_text("path,score\na.jpg,1\nb.jpg,2\n")
    ds = validate(load_dataset("csv", root=tmp_path))
    assert len(ds) == 2  # the cheap header check cannot see the truncation
    crops = TrainCrops(ds.records, PreprocessConfig(short_side=64, crop_size=64), crops_per_image=1)
    with caplog.at_level(logging.WARNING):
        items = [crops[0], crops[1]]
    assert items[1] is None and "b.jpg" in caplog.text
    batch = collate_skip_failed(items)
    assert batch[0].shape == (1, 3, 64, 64) and batch[2].tolist() == [0]
    assert collate_skip_failed([None, None]) is None
