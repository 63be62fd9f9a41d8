"""Synthetic distortions: monotone severity, determinism, the dataset writer and its CLI."""
from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from glia_edge.distortions import (BUNDLED_PHOTOS, DEGRADED_PHOTOS, DISTORTIONS, LABEL_COLUMNS, Reference, cut_tiles,
                                   encode, is_grey, make_dataset, reference_images, score_for_level)
from glia_edge.errors import DatasetError

REQUIRED = {"gaussian_blur", "gaussian_noise", "jpeg", "contrast", "overexposure", "underexposure", "pixelate",
            "motion_blur"}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.coffee()).resize((192, 128), Image.Resampling.LANCZOS)


def _f(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def _levels(img: Image.Image, name: str, seed: int = 0) -> list[Image.Image]:
    return [DISTORTIONS[name](img, lv, np.random.default_rng(seed)) for lv in range(1, 6)]


def _laplacian_var(img: Image.Image) -> float:
    g = _f(img.convert("L"))
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def _strictly(values: list[float], direction: int) -> bool:
    return all(direction * (b - a) > 0 for a, b in zip(values, values[1:]))


def test_registry_covers_the_required_types() -> None:
    assert REQUIRED <= set(DISTORTIONS)
    for name, fn in DISTORTIONS.items():
        assert len(fn.params) == 5, name
    with pytest.raises(ValueError, match="level"):
        DISTORTIONS["jpeg"](Image.new("RGB", (8, 8)), 6, np.random.default_rng(0))


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_departure_from_reference_grows_with_level(photo: Image.Image, name: str) -> None:
    outs = _levels(photo, name)
    assert all(o.mode == "RGB" and o.size == photo.size for o in outs)
    mse = [float(((_f(o) - _f(photo)) ** 2).mean()) for o in outs]
    assert mse[0] > 0 and _strictly(mse, +1), mse


@pytest.mark.parametrize("name", ["gaussian_blur", "motion_blur"])
def test_blur_lowers_sharpness(photo: Image.Image, name: str) -> None:
    sharp = [_laplacian_var(photo)] + [_laplacian_var(o) for o in _levels(photo, name)]
    assert _strictly(sharp, -1), sharp


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise"])
def test_noise_raises_residual_variance(photo: Image.Image, name: str) -> None:
    resid = [float((_f(o) - _f(photo)).var()) for o in _levels(photo, name)]
    assert _strictly(resid, +1), resid


def test_jpeg_file_size_falls_with_level(photo: Image.Image) -> None:
    sizes = [len(encode(photo, "JPEG", quality=int(q), subsampling=2)) for q in DISTORTIONS["jpeg"].params]
    assert _strictly([float(s) for s in sizes], -1), sizes


def test_exposure_contrast_and_saturation_move_the_right_way(photo: Image.Image) -> None:
    mean = _f(photo).mean()
    assert _strictly([mean] + [_f(o).mean() for o in _levels(photo, "overexposure")], +1)
    assert _strictly([mean] + [_f(o).mean() for o in _levels(photo, "underexposure")], -1)
    assert _strictly([_f(photo).std()] + [_f(o).std() for o in _levels(photo, "contrast")], -1)
    chroma = [float(np.ptp(_f(o), axis=2).mean()) for o in [photo, *_levels(photo, "saturation")]]
    assert _strictly(chroma, -1) and chroma[-1] == 0.0


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_deterministic_given_the_rng(photo: Image.Image, name: str) -> None:
    a = _levels(photo, name, seed=7)
    b = _levels(photo, name, seed=7)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_score_label_falls_with_level() -> None:
    assert [score_for_level(lv) for lv in range(6)] == [100.0, 82.0, 64.0, 46.0, 28.0, 10.0]


def test_cut_tiles_are_non_overlapping_and_skip_dark_areas(photo: Image.Image) -> None:
    # Each pixel encodes its own (x, y): x = R + 256 * (B - 100), y = G. The right half is black.
    y, x = np.mgrid[0:200, 0:400]
    arr = np.stack([x % 256, y, 100 + x // 256], axis=2).astype(np.uint8)
    arr[:, 200:] = 0
    tiles = cut_tiles(Image.fromarray(arr), 64, 10)
    assert len(tiles) == 6 and all(t.size == (85, 64) for t in tiles)  # 2 of 4 columns x 3 rows
    coords = [{(int(r) + 256 * (int(b) - 100), int(g)) for r, g, b in np.asarray(t).reshape(-1, 3)} for t in tiles]
    assert all(len(c) == 85 * 64 for c in coords)
    assert len(set().union(*coords)) == 6 * 85 * 64  # no pixel in two tiles
    assert all(xx < 200 for c in coords for xx, _ in c)  # no tile from the black half
    assert cut_tiles(photo, 128, 4) == []  # only one tile would fit: not tiled
    assert len(cut_tiles(Image.fromarray(arr[:, :200]).resize((400, 300)), 64, 2)) == 2


def _tiny_refs(photo: Image.Image) -> list[Reference]:
    return [Reference("coffee", 0, photo.resize((48, 32))), Reference("coffee", 1, photo.crop((0, 0, 48, 32))),
            Reference("flipped", 0, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((48, 32)))]


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_dataset_writes_labels_and_is_deterministic(tmp_path: Path, photo: Image.Image) -> None:
    refs = _tiny_refs(photo)
    labels = make_dataset(tmp_path / "a", refs, ["jpeg", "gaussian_noise"], levels=3, seed=1)
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert len(rows) == len(refs) * (1 + 2 * 3)
    assert all((tmp_path / "a" / r["path"]).is_file() for r in rows)
    assert {r["ref"] for r in rows} == {"coffee", "flipped"}
    for r in rows:
        assert float(r["score"]) == score_for_level(int(r["level"]))
        assert (r["distortion"] == "none") == (r["level"] == "0")
    make_dataset(tmp_path / "b", refs, ["jpeg", "gaussian_noise"], levels=3, seed=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    (tmp_path / "afile").write_text("")
    with pytest.raises(DatasetError, match="afile: is a file"):
        make_dataset(tmp_path / "afile", refs, ["jpeg"], levels=3, seed=1)
    make_dataset(tmp_path / "c", refs, ["gaussian_noise"], levels=3, seed=2)
    noisy = "images/coffee-0-gaussian_noise-2.png"
    assert _digest(tmp_path / "a")[noisy] != _digest(tmp_path / "c")[noisy]
    with pytest.raises(DatasetError, match="already exists"):
        make_dataset(tmp_path / "a", refs, ["jpeg"], levels=1)
    make_dataset(tmp_path / "a", refs, ["jpeg"], levels=1, overwrite=True)
    assert len((tmp_path / "a" / "labels.csv").read_text().splitlines()) == 1 + len(refs) * 2


def test_failure_leaves_nothing_half_written(tmp_path: Path, photo: Image.Image,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(img: Image.Image, level: int, rng: np.random.Generator) -> Image.Image:
        raise RuntimeError("disk full")

    monkeypatch.setitem(DISTORTIONS, "boom", boom)
    with pytest.raises(RuntimeError):
        make_dataset(tmp_path / "out", _tiny_refs(photo), ["jpeg", "boom"], levels=2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown distortion"):
        make_dataset(tmp_path / "out", _tiny_refs(photo), ["nope"])


def test_user_folder_skips_and_reports_bad_files(tmp_path: Path, photo: Image.Image,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "refs"
    folder.mkdir()
    photo.save(folder / "good one.jpg", quality=95)
    photo.rotate(90, expand=True).save(folder / "portrait.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="glia_edge"):
        refs = reference_images(folder, size=64, max_tiles=1)
    assert sorted(r.ref for r in refs) == ["good_one", "portrait"]
    assert all(min(r.image.size) == 64 for r in refs)
    logged = caplog.text
    assert "corrupt.jpg" in logged and "empty.png" in logged and "notes.txt" not in logged
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no usable reference"):
        reference_images(empty)


def test_bundled_photos_and_stereo_views_share_a_ref() -> None:
    refs = reference_images(names=["astronaut", "stereo_motorcycle"], size=96, max_tiles=1)
    assert [(r.ref, r.part) for r in refs] == [("astronaut", 0), ("motorcycle", 0), ("motorcycle", 1)]
    with pytest.raises(DatasetError, match="unknown bundled photo"):
        reference_images(names=["cat"])


@pytest.mark.parametrize("name", sorted(DEGRADED_PHOTOS))
def test_a_photo_degraded_on_purpose_is_refused_as_a_pristine_reference(name: str) -> None:
    # scikit-image ships these to demonstrate a repair (clock: deconvolution); as a validation
    # photo the motion-blurred clock was the "pristine" image every model scored lowest.
    with pytest.raises(DatasetError, match=f"{name}.*cannot be a pristine reference: .+"):
        reference_images(names=["coins", name], size=96, max_tiles=1)
    assert name not in BUNDLED_PHOTOS


def test_photos_bundled_by_scikit_learn_matplotlib_and_pywavelets_load_as_rgb_references() -> None:
    names = ["china", "flower", "grace_hopper", "aero", "ascent"]
    refs = reference_images(names=names, size=96, max_tiles=1, grey_copies=True)
    # PyWavelets' two photos are grey-level already: they get no grey copy of their own.
    assert [r.ref for r in refs] == ["china", "china", "flower", "flower", "grace_hopper", "grace_hopper",
                                     "aero", "ascent"]
    assert all(r.image.mode == "RGB" and min(r.image.size) == 96 for r in refs)
    assert [is_grey(r.image) for r in refs[-2:]] == [True, True]
    # Real photos, not blank stand-ins: every one has texture.
    assert all(np.asarray(r.image.convert("L"), dtype=np.float32).std() > 20 for r in refs)


def test_photos_from_debian_wallpaper_packages_enter_whole_or_name_their_package(
        tmp_path: Path, photo: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge import distortions

    # A desktop-sized JPEG stands in for the installed wallpaper: CI installs no Debian package.
    wallpaper = tmp_path / "Dune.jpg"
    photo.resize((1680, 1050), Image.Resampling.BICUBIC).save(wallpaper, quality=90)
    monkeypatch.setitem(distortions.DEBIAN_PHOTOS, "mate_dune", ("mate-backgrounds", str(wallpaper)))
    refs = reference_images(names=["mate_dune"], size=96, max_tiles=8, grey_copies=True)
    # Whole and downscaled, never cut into native-resolution tiles; a grey copy like any colour photo.
    assert [(r.ref, r.part, r.image.size) for r in refs] == [("mate_dune", 0, (154, 96)), ("mate_dune", 1, (154, 96))]
    assert "mate_dune" in BUNDLED_PHOTOS
    monkeypatch.setitem(distortions.DEBIAN_PHOTOS, "mate_dune", ("mate-backgrounds", str(tmp_path / "absent.jpg")))
    with pytest.raises(DatasetError, match=r"'mate_dune' comes with the Debian package mate-backgrounds: "
                                           r"apt-get install mate-backgrounds$"):
        reference_images(names=["mate_dune"], size=96)


def test_grey_photos_get_no_colour_only_series(tmp_path: Path) -> None:
    import csv

    refs = reference_images(names=["coins", "coffee"], size=96, max_tiles=1)
    labels = make_dataset(tmp_path / "s", refs, types=["saturation", "gaussian_blur"], seed=0)
    series = {(r["ref"], r["distortion"]) for r in csv.DictReader(open(labels))}
    assert ("coins", "saturation") not in series and ("coins", "gaussian_blur") in series
    assert ("coffee", "saturation") in series


def test_synth_cli(tmp_path: Path, photo: Image.Image) -> None:
    from glia_edge.cli import app

    folder = tmp_path / "refs"
    folder.mkdir()
    photo.save(folder / "a.png")
    out = tmp_path / "set"
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(out), "--refs", str(folder), "--levels", "2", "--types",
                              "jpeg,pixelate", "--types", "contrast", "--size", "48", "--seed", "3", "--tiles", "1"])
    assert res.exit_code == 0, res.output
    assert len((out / "labels.csv").read_text().splitlines()) == 1 + 1 + 3 * 2
    res = runner.invoke(app, ["synth", str(out), "--refs", str(folder)])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["synth", "--list-types"])
    assert res.exit_code == 0 and "motion_blur" in res.output


def test_grey_copies_join_their_photo_as_pristine_content_without_colour_series(tmp_path: Path) -> None:
    import csv

    from glia_edge.distortions import is_grey

    refs = reference_images(names=["coffee", "coins"], size=96, max_tiles=1, grey_copies=True)
    assert [(r.ref, r.part, is_grey(r.image)) for r in refs] == [("coffee", 0, False), ("coffee", 1, True),
                                                                  ("coins", 0, True)]  # coins is grey already
    labels = make_dataset(tmp_path / "s", refs, types=["oversaturation", "gaussian_blur"], seed=0)
    series = {(r["ref"], r["part"], r["distortion"]) for r in csv.DictReader(open(labels))}
    assert ("coffee", "0", "oversaturation") in series and ("coffee", "1", "oversaturation") not in series
    assert ("coffee", "1", "none") in series and ("coffee", "1", "gaussian_blur") in series


def test_oversaturation_raises_chroma_level_by_level(photo: Image.Image) -> None:
    chroma = [float(np.ptp(_f(o), axis=2).mean()) for o in [photo, *_levels(photo, "oversaturation")]]
    assert all(b > a for a, b in zip(chroma, chroma[1:])), chroma


def test_a_distortion_that_changes_nothing_is_reported(tmp_path: Path, photo: Image.Image,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    flat = Reference("flat", 0, Image.new("RGB", (48, 32), (90, 140, 200)))  # blur cannot change a flat image
    with caplog.at_level(logging.WARNING):
        make_dataset(tmp_path / "s", [flat, Reference("coffee", 0, photo.resize((48, 32)))], ["gaussian_blur"],
                     levels=2)
    warned = [r.getMessage() for r in caplog.records if "pixel-identical" in r.getMessage()]
    assert len(warned) == 1 and "flat-0" in warned[0] and "gaussian_blur level(s) 1,2" in warned[0]


def test_synth_off_a_terminal_prints_no_progress_and_a_file_as_refs_is_named(tmp_path: Path,
                                                                             photo: Image.Image) -> None:
    from glia_edge.cli import app

    folder = tmp_path / "refs"
    folder.mkdir()
    photo.save(folder / "a.png")
    out = tmp_path / "set"
    res = CliRunner().invoke(app, ["synth", str(out), "--refs", str(folder), "--levels", "1", "--types", "jpeg",
                                   "--size", "48", "--tiles", "1"])
    assert res.exit_code == 0, res.output
    assert res.stdout == f"wrote 2 labelled images to {out / 'labels.csv'}\n"  # results only: no bar on stdout
    assert "distorting" not in res.stderr  # nor on stderr off a terminal
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "other"), "--refs", str(folder / "a.png")])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {folder / 'a.png'}: is a file, not a folder of reference photos"
