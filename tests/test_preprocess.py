"""The one preprocessing definition: decoding rules, resize, crop grid, and its torch-free import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from glia_edge.errors import ImageLoadError
from glia_edge.preprocess import (PreprocessConfig, aggregate, crop_boxes, load_image, preprocess, random_crop,
                                  resize_short_side)


def _rgb(w: int = 500, h: int = 400) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_resize_short_side_keeps_aspect() -> None:
    out = resize_short_side(_rgb(800, 400), 384)
    assert out.size == (768, 384)
    assert resize_short_side(_rgb(300, 900), 384).size == (384, 1152)


@pytest.mark.parametrize("n", [1, 5, 9])
def test_crop_grid_is_deterministic_and_inside(n: int) -> None:
    boxes = crop_boxes(576, 384, 224, n)
    assert len(boxes) == n == len(set(boxes))
    assert all(0 <= l and 0 <= t and r <= 576 and b <= 384 and r - l == 224 == b - t for l, t, r, b in boxes)
    assert boxes == crop_boxes(576, 384, 224, n)
    centre = ((576 - 224) // 2, (384 - 224) // 2, (576 - 224) // 2 + 224, (384 - 224) // 2 + 224)
    assert centre in boxes


def test_preprocess_output_contract() -> None:
    cfg = PreprocessConfig(crops=5)
    x = preprocess(_rgb(), cfg)
    assert x.shape == (5, 3, 224, 224) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_path_pil_rgb_and_bgr_arrays_agree(tmp_path) -> None:
    img = _rgb()
    img.save(tmp_path / "a.png")
    rgb = np.asarray(img)
    ref = preprocess(tmp_path / "a.png")
    np.testing.assert_array_equal(preprocess(img), ref)
    np.testing.assert_array_equal(preprocess(rgb), ref)
    np.testing.assert_array_equal(preprocess(rgb[:, :, ::-1].copy(), bgr=True), ref)


def test_exif_orientation_is_applied(tmp_path) -> None:
    img = _rgb(500, 300)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (300, 500)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_modes_convert_to_rgb(mode: str, tmp_path) -> None:
    if mode == "I;16":
        arr = (np.linspace(0, 65535, 300 * 300).reshape(300, 300)).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16")
    else:
        img = _rgb(300, 300).convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (300, 300)
    if mode == "I;16":
        assert np.asarray(out)[..., 0].max() == 255  # scaled, not clipped


@pytest.mark.parametrize("arr,reason", [
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.int64), "dtype"),
    (np.full((10, 10, 3), 2.0, np.float32), r"\[0, 1\]"),
])
def test_bad_arrays_are_named_errors(arr: np.ndarray, reason: str) -> None:
    with pytest.raises(ImageLoadError, match=reason):
        load_image(arr)


def test_bad_files_are_named_errors(tmp_path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    _rgb().save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    for name, reason in [("empty.jpg", "empty file"), ("text.jpg", "not an image"), ("cut.jpg", "corrupt"),
                         ("missing.jpg", "not found")]:
        with pytest.raises(ImageLoadError, match=reason) as info:
            load_image(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ImageLoadError, match="pixels"):
        load_image(tmp_path / "ok.jpg", max_pixels=1000)
    with pytest.raises(ImageLoadError, match="unsupported input type"):
        load_image(42)  # type: ignore[arg-type]


def test_a_tiff_whose_tag_makes_pillow_raise_type_error_is_a_named_error(tmp_path) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((150, 200, 3), 128, np.uint8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    data[51], data[72] = 242, 7  # a tag Pillow 13 decodes into a TypeError inside load() (found by fuzzing)
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    with pytest.warns(UserWarning), pytest.raises(ImageLoadError, match="corrupt image") as info:
        preprocess(tmp_path / "bad.tif")
    assert "bad.tif" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("make,reason", [
    (lambda: Image.new("RGB", (0, 0)), "empty image"),
    (lambda: Image.new("RGB", (5, 0)), "empty image"),
    (lambda: _closed(Image.new("RGB", (50, 50))), "closed image"),
])
def test_unusable_pil_images_are_named_errors(make, reason: str) -> None:
    for crops in (1, 5):
        with pytest.raises(ImageLoadError, match=reason):
            preprocess(make(), crops=crops)


def _closed(img: Image.Image) -> Image.Image:
    img.close()
    return img


@pytest.mark.parametrize("crops", [1, 5, 9])
def test_extreme_aspect_ratio_is_refused_before_the_whole_resize(tmp_path, crops: int) -> None:
    """5 and 9 crops resize the whole image: 2 x 4000 px would become 384 x 768,000 (885 MB). One
    rule for every crop count: the centre crop alone would be small, but is refused alike."""
    Image.fromarray(np.zeros((4000, 2), np.uint8)).save(tmp_path / "line.png")
    with pytest.raises(ImageLoadError, match="aspect ratio 2000:1") as info:
        preprocess(tmp_path / "line.png", crops=crops)
    assert "line.png" in str(info.value) and "over the limit of 100000000" in str(info.value)
    Image.fromarray(np.zeros((200, 30), np.uint8)).save(tmp_path / "tall.png")  # 384 x 2560: fine
    assert preprocess(tmp_path / "tall.png", crops=9).shape == (9, 3, 224, 224)


def test_random_crop_and_flips_stay_in_range() -> None:
    cfg = PreprocessConfig()
    img = resize_short_side(_rgb(), cfg.short_side)
    rng = np.random.default_rng(0)
    crops = [random_crop(img, cfg, rng) for _ in range(8)]
    assert all(c.shape == (3, 224, 224) and c.flags.c_contiguous for c in crops)
    assert len({c.tobytes() for c in crops}) == 8


def test_aggregate_means_per_image() -> None:
    np.testing.assert_allclose(aggregate(np.array([1.0, 3.0, 5.0, 7.0, 9.0]), [2, 3]), [2.0, 7.0])
    with pytest.raises(ValueError):
        aggregate(np.ones(3), [2, 2])


def test_preprocessing_imports_without_torch() -> None:
    code = "import sys, glia_edge, glia_edge.preprocess, glia_edge.runtimes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("crops", [1, 5])
def test_a_lazily_opened_jpeg_is_decoded_as_its_path(tmp_path, crops: int) -> None:
    """``Image.open`` not yet loaded gets the path's reduced-size JPEG decode (draft), so both score alike."""
    cfg = PreprocessConfig(short_side=64, crop_size=32)  # 400x300 is over 2 x 64: decoded at 1/4 scale
    _rgb(400, 300).save(tmp_path / "a.jpg", quality=90)
    want = preprocess(tmp_path / "a.jpg", cfg, crops=crops)
    with Image.open(tmp_path / "a.jpg") as lazy:
        assert np.array_equal(preprocess(lazy, cfg, crops=crops), want)
