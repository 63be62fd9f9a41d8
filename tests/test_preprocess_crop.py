"""Version 2's fast centre crop (``preprocess.centre_crop``) gives the pixels of the version-2
definition as it was written before it (``_reference_v2`` below, kept verbatim: full
area-average, RGB PIL copy, full bicubic resize, then the crop) to within one level, on at most
0.2% of the pixels (PIL's float32 resize box moves a filter centre by about 1e-5 px). Every input
kind, large and odd sizes, with OpenCV and with PIL's fallback area step."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from glia_edge.preprocess import CENTRE_CROP_MAX_LEVELS, PreprocessConfig, centre_crop, preprocess

P = sys.modules["glia_edge.preprocess"]  # the module (``glia_edge.preprocess`` is also the function)
CFG = PreprocessConfig()  # version 2, one crop, short side 384, crop 224, bicubic
assert CFG.version == 2 and CFG.crops == 1


# -- today's version 2 (before the fast centre crop), self-contained --------------------------------
def _ref_trim_box(width: int, height: int, factor: int) -> tuple[int, int, int, int]:
    w, h = width // factor * factor, height // factor * factor
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _ref_area_reduce(img: Image.Image, short_side: int) -> Image.Image:
    factor = max(1, min(img.width, img.height) // short_side)
    if factor == 1:
        return img
    return img.reduce(factor, box=_ref_trim_box(img.width, img.height, factor))


def _ref_area_reduce_array(arr: np.ndarray, short_side: int, cv2: object) -> np.ndarray:
    height, width = arr.shape[:2]
    factor = max(1, min(width, height) // short_side)
    if factor == 1:
        return arr
    left, top, right, bottom = _ref_trim_box(width, height, factor)
    region = arr[top:bottom, left:right]
    size = ((right - left) // factor, (bottom - top) // factor)
    if cv2:
        if region.ndim == 3 and region.strides[1] != region.shape[2] * region.itemsize:
            region = np.ascontiguousarray(region)
        return cv2.resize(region, size, interpolation=cv2.INTER_AREA)  # type: ignore[attr-defined]
    return np.asarray(Image.fromarray(np.ascontiguousarray(region)).reduce(factor))


def _ref_rgb8_to_pil(arr: np.ndarray, bgr: bool) -> Image.Image:
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr)
        if bgr:
            return Image.frombuffer("RGB", (arr.shape[1], arr.shape[0]), arr, "raw", "BGR", 0, 1)
        return Image.fromarray(arr, "RGB")
    return Image.fromarray(np.ascontiguousarray(arr), "L").convert("RGB")


def _ref_resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    w, h = img.size
    scale = short_side / min(w, h)
    new_w, new_h = max(short_side, round(w * scale)), max(short_side, round(h * scale))
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC)


def _reference_v2(source: object, cfg: PreprocessConfig, bgr: bool = False, cv2: object = None) -> np.ndarray:
    """load_reduced (version 2) + crops_from_image (one crop) as they were, as a (1, 3, S, S) batch.
    Decoding (draft JPEG decode, EXIF, mode and dtype conversion) is the module's own: unchanged."""
    name = P.describe(source)
    if isinstance(source, np.ndarray):
        rgb8 = P._array_to_rgb8(source, name)
        img = _ref_rgb8_to_pil(_ref_area_reduce_array(rgb8, cfg.short_side, cv2), bgr)
    else:
        if isinstance(source, Image.Image):
            img = P._to_rgb8(ImageOps.exif_transpose(source) or source, name)
        else:
            img = P._decode_file(source, name, cfg.max_pixels, cfg.short_side)
        img = _ref_area_reduce(img, cfg.short_side)
    resized = _ref_resize_short_side(_ref_area_reduce(img, cfg.short_side), cfg.short_side)
    cs = cfg.crop_size
    x, y = (resized.width - cs) // 2, (resized.height - cs) // 2
    crop = resized.crop((x, y, x + cs, y + cs))
    return (np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0))[None]


# -- inputs ---------------------------------------------------------------------------------------
def _texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields, hard edges and per-pixel noise: any misplaced tap or rounding shows."""
    rng = np.random.default_rng([seed, width, height])
    small = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    base[:, ::7] = 250  # thin lines: full-range steps for the negative lobes of the bicubic
    base[::11, :] = 5
    noise = rng.integers(-40, 41, (height, width, 3), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


SIZES = [(1920, 1080), (3840, 2160), (640, 480), (1279, 719), (2161, 1213), (1001, 777), (385, 1000),
         (767, 769), (400, 384), (384, 300), (5001, 1153), (1153, 3001)]
FRAME_SIZES = [(1920, 1080), (3840, 2160), (640, 480), (1279, 719), (2161, 1213), (767, 769)]


#: The share of a crop's pixel values that may differ (by one level); about 0.02% is typical.
MAX_SHARE_DIFFERING = 0.002


def _near(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    levels = np.abs(got.astype(np.float64) - want) * 255.0
    assert np.allclose(levels, np.rint(levels), atol=1e-3), "not whole 8-bit levels apart"
    assert levels.max() <= CENTRE_CROP_MAX_LEVELS + 1e-3, \
        f"max |diff| {levels.max():.1f} levels at {np.unravel_index(levels.argmax(), levels.shape)}"
    assert (levels > 0.5).mean() <= MAX_SHARE_DIFFERING, f"{(levels > 0.5).mean():.3%} of the values differ"


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape == (1, 3, 224, 224)
    _near(got, want)


@pytest.fixture(params=["opencv", "pil"])
def area_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> object:
    """Both area-averaging backends: OpenCV's INTER_AREA (where installed) and PIL's reduce."""
    if request.param == "opencv":
        cv2 = pytest.importorskip("cv2")
        monkeypatch.setattr(P, "_CV2", cv2)
        return cv2
    monkeypatch.setattr(P, "_CV2", False)
    return False


@pytest.mark.parametrize("size", FRAME_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bgr_and_rgb_frames_equal_the_definition(size: tuple[int, int], area_backend: object) -> None:
    rgb = _texture(*size)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    _same(preprocess(bgr, CFG, bgr=True), _reference_v2(bgr, CFG, bgr=True, cv2=area_backend))
    _same(preprocess(rgb, CFG), _reference_v2(rgb, CFG, cv2=area_backend))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_arrays_and_pil_images_equal_the_definition(size: tuple[int, int]) -> None:
    cv2 = P._opencv()
    rgb = _texture(*size, seed=1)
    _same(preprocess(rgb, CFG), _reference_v2(rgb, CFG, cv2=cv2))
    _same(preprocess(np.ascontiguousarray(rgb[:, :, ::-1]), CFG, bgr=True),
          _reference_v2(np.ascontiguousarray(rgb[:, :, ::-1]), CFG, bgr=True, cv2=cv2))
    img = Image.fromarray(rgb)
    _same(preprocess(img, CFG), _reference_v2(img, CFG))


@pytest.mark.parametrize("size", [(1920, 1080), (3840, 2160), (640, 480), (4000, 3000), (2161, 1213),
                                  (1001, 777), (385, 1000), (3001, 5003)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_files_and_bytes_equal_the_definition(size: tuple[int, int], tmp_path) -> None:
    """JPEG (DCT-scaled decode fires from 768 px short side) and PNG, from a path and as bytes."""
    img = Image.fromarray(_texture(*size, seed=2))
    for suffix, kw in ((".jpg", {"quality": 90}), (".png", {"compress_level": 1})):
        path = tmp_path / f"im{suffix}"
        img.save(path, **kw)
        want = _reference_v2(path, CFG)
        _same(preprocess(path, CFG), want)
        _same(preprocess(str(path), CFG), want)
        _same(preprocess(path.read_bytes(), CFG), want)


def test_exif_rotated_jpeg(tmp_path) -> None:
    img = Image.fromarray(_texture(2400, 1601, seed=3))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=92)
    _same(preprocess(path, CFG), _reference_v2(path, CFG))
    opened = Image.open(path)  # not loaded yet: decoded at reduced size, as its path is
    _same(preprocess(opened, CFG), _reference_v2(path, CFG))


@pytest.mark.parametrize("kind", ["gray", "gray1", "rgba", "bgra", "uint16", "float", "noncontig"])
def test_other_array_layouts_equal_the_definition(kind: str, area_backend: object) -> None:
    rgb = _texture(1921, 1083, seed=4)
    bgr = kind == "bgra"
    arr = {
        "gray": rgb[:, :, 1].copy(),
        "gray1": rgb[:, :, 1:2].copy(),
        "rgba": np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)]),
        "bgra": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 77, np.uint8)]),
        "uint16": rgb.astype(np.uint16) * 257 + 3,
        "float": rgb.astype(np.float32) / 255.0,
        "noncontig": rgb[::-1, 5:-3],
    }[kind]
    _same(preprocess(arr, CFG, bgr=bgr), _reference_v2(arr, CFG, bgr=bgr, cv2=area_backend))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_pil_modes_equal_the_definition(mode: str) -> None:
    rgb = Image.fromarray(_texture(1700, 1300, seed=5))
    img = (Image.fromarray((np.asarray(rgb)[:, :, 0].astype(np.uint16) * 200)) if mode == "I;16"
           else rgb.convert(mode))
    _same(preprocess(img, CFG), _reference_v2(img, CFG))


@pytest.mark.parametrize("crop_size, short_side, resample", [(224, 384, "bilinear"), (224, 384, "lanczos"),
                                                             (160, 200, "bicubic"), (384, 384, "bicubic")])
def test_other_configurations_equal_the_definition(crop_size: int, short_side: int, resample: str) -> None:
    cfg = PreprocessConfig(crop_size=crop_size, short_side=short_side, resample=resample)
    frame = _texture(1920, 1080, seed=6)
    want = crops_reference(frame, cfg)
    _near(preprocess(frame, cfg, bgr=True), want)


def crops_reference(frame: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The module's full path (load_reduced + crops_from_image), for configurations _reference_v2 does not cover."""
    return P.crops_from_image(P.load_reduced(frame, cfg, bgr=True), cfg, 1)


def test_more_crops_take_the_full_path_and_the_centre_crop_is_one_of_them() -> None:
    frame = _texture(1920, 1080, seed=7)
    five = preprocess(frame, CFG, crops=5, bgr=True)
    assert five.shape == (5, 3, 224, 224)
    _near(five[4], preprocess(frame, CFG, bgr=True)[0])


def test_centre_crop_is_uint8_rgb_and_version_2_only() -> None:
    frame = _texture(1920, 1080, seed=8)
    crop = centre_crop(frame, CFG, bgr=True)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, centre_crop(np.ascontiguousarray(frame[:, :, ::-1]), CFG))
    with pytest.raises(ValueError, match="version 2"):
        centre_crop(frame, CFG.replace(version=1))


def test_frames_never_become_a_large_pil_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1080p frame: every PIL image resized, and every one it yields, is well under the averaged
    frame (960x540), and the resizes produce only the crop's columns, then its pixels."""
    pytest.importorskip("cv2")
    resized: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real_resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kw: object) -> Image.Image:
        resized.append((self.size, tuple(size)))
        return real_resize(self, size, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    preprocess(np.zeros((1080, 1920, 3), np.uint8), CFG, bgr=True)
    assert len(resized) == 2, resized
    assert all(w * h <= 960 * 540 * 2 // 3 for pair in resized for w, h in pair), resized
    assert resized[0][1][0] == 224 and resized[1][1] == (224, 224), resized


def test_bad_inputs_fail_as_before(tmp_path) -> None:
    from glia_edge.errors import ImageLoadError

    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    for source, match in ((tmp_path / "missing.jpg", "file not found"), (tmp_path / "bad.jpg", "not an image"),
                          (b"", "empty input"), (np.zeros((0, 5, 3), np.uint8), "empty array"),
                          (np.zeros((4, 4, 2), np.uint8), "expected an HxW"),
                          (np.zeros((2000, 2000, 3), np.uint8), "over the limit")):
        cfg = CFG.replace(max_pixels=1_000_000)
        with pytest.raises(ImageLoadError, match=match):
            preprocess(source, cfg)
        with pytest.raises(ImageLoadError, match=match):
            P.load_reduced(source, cfg)
