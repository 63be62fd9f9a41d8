"""Graded synthetic distortions of reference photos, for smoke training and the default model.

Each distortion is a function ``fn(img, level, rng) -> img`` on 8-bit RGB PIL images with five
levels of monotone severity (1 = mild, 5 = severe); its per-level parameters are on ``fn.params``.
Types follow the families of KADID-10k and TID2013 (Lin et al. 2019; Ponomarenko et al. 2015):
blur (gaussian, motion), noise (gaussian, impulse), compression (JPEG, JPEG 2000), pixelation,
contrast, exposure (over and under, in linear light) and colour saturation. Everything is
numpy + PIL, and deterministic given the ``numpy.random.Generator`` passed in.

``DISTORTIONS`` is the registry (name -> function). ``reference_images`` gathers reference
photos (scikit-image's bundled colour photos, or a user folder; large ones are cut into several
non-overlapping tiles) and ``make_dataset`` writes a labelled set: ``images/`` plus ``labels.csv``
with ``path,score,ref,distortion,level,part`` (see :func:`score_for_level` for the score).
"""
from __future__ import annotations

import csv
import io
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from glia_edge.atomic import replace_path, staging_dir
from glia_edge.dead_leaves import dead_leaves_named, is_dead_leaves
from glia_edge.errors import DatasetError, ImageLoadError
from glia_edge.preprocess import is_image_file, load_image, resize_short_side

log = logging.getLogger(__name__)

DistortionFn = Callable[[Image.Image, int, np.random.Generator], Image.Image]
LEVELS = 5

#: name -> fn(img: PIL RGB, level: 1..5, rng) -> PIL RGB. Filled by ``@_register`` below.
DISTORTIONS: dict[str, DistortionFn] = {}


def _register(name: str, params: Sequence[float]) -> Callable[[Callable], DistortionFn]:
    """Register ``fn(img, param, rng)`` as ``name``: the wrapper maps level 1..5 to ``params``."""
    if len(params) != LEVELS:
        raise ValueError(f"{name}: need {LEVELS} parameters, got {len(params)}")

    def deco(fn: Callable[[Image.Image, float, np.random.Generator], Image.Image]) -> DistortionFn:
        def distort(img: Image.Image, level: int, rng: np.random.Generator) -> Image.Image:
            if not 1 <= int(level) <= LEVELS:
                raise ValueError(f"{name}: level must be 1..{LEVELS}, got {level}")
            out = fn(img.convert("RGB"), params[int(level) - 1], rng)
            return out if out.mode == "RGB" else out.convert("RGB")

        distort.__name__ = name
        distort.__doc__ = f"{fn.__doc__} Per-level parameter: {tuple(params)}."
        distort.params = tuple(params)  # type: ignore[attr-defined]
        DISTORTIONS[name] = distort
        return distort

    return deco


def _as_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = x / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return 255.0 * np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    """Encode ``img`` in memory (``fmt`` as PIL names it); used by the codec distortions and tests."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


@_register("gaussian_blur", (0.8, 1.5, 2.5, 4.0, 6.0))
def gaussian_blur(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur of standard deviation ``sigma`` pixels."""
    return img.filter(ImageFilter.GaussianBlur(sigma))


@_register("motion_blur", (5, 9, 15, 21, 31))
def motion_blur(img: Image.Image, length: float, rng: np.random.Generator) -> Image.Image:
    """Linear camera-shake blur over ``length`` pixels at a random angle (mean of shifted copies)."""
    angle = rng.uniform(0.0, np.pi)
    n = int(length)
    steps = np.linspace(-(n - 1) / 2, (n - 1) / 2, n)
    dx, dy = np.rint(steps * np.cos(angle)).astype(int), np.rint(steps * np.sin(angle)).astype(int)
    pad = int(np.ceil(n / 2))
    arr = np.pad(_as_float(img), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = img.height, img.width
    acc = np.zeros((h, w, 3), np.float32)
    for x, y in zip(dx, dy):
        acc += arr[pad + y:pad + y + h, pad + x:pad + x + w]
    return _to_image(acc / n)


@_register("gaussian_noise", (5.0, 10.0, 16.0, 24.0, 36.0))
def gaussian_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Additive white gaussian noise, independent per channel, ``sigma`` in 8-bit levels."""
    arr = _as_float(img)
    return _to_image(arr + rng.normal(0.0, sigma, arr.shape).astype(np.float32))


@_register("impulse_noise", (0.01, 0.03, 0.06, 0.10, 0.16))
def impulse_noise(img: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Salt-and-pepper noise: a ``fraction`` of pixels set to black or white (half each)."""
    arr = np.array(img)
    hit = rng.random(arr.shape[:2]) < fraction
    salt = rng.random(arr.shape[:2]) < 0.5
    arr[hit & salt] = 255
    arr[hit & ~salt] = 0
    return Image.fromarray(arr, "RGB")


@_register("jpeg", (40, 22, 12, 7, 3))
def jpeg(img: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    """JPEG compression at ``quality`` (libjpeg scale, 4:2:0 chroma subsampling)."""
    return Image.open(io.BytesIO(encode(img, "JPEG", quality=int(quality), subsampling=2))).convert("RGB")


@_register("jpeg2000", (25, 50, 100, 180, 320))
def jpeg2000(img: Image.Image, ratio: float, rng: np.random.Generator) -> Image.Image:
    """JPEG 2000 compression at ``ratio``:1 (wavelet blur and ringing)."""
    data = encode(img, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], irreversible=True)
    return Image.open(io.BytesIO(data)).convert("RGB")


@_register("pixelate", (2, 3, 4, 6, 8))
def pixelate(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Box-downsample by ``factor`` and blow back up with nearest neighbour (blocky mosaic)."""
    w, h = img.size
    small = img.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST)


@_register("contrast", (0.7, 0.5, 0.35, 0.22, 0.12))
def contrast(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Contrast reduction: pixels pulled towards the mean grey by ``factor`` (1 = unchanged)."""
    return ImageEnhance.Contrast(img).enhance(factor)


@_register("overexposure", (0.5, 1.0, 1.6, 2.3, 3.2))
def overexposure(img: Image.Image, stops: float, rng: np.random.Generator) -> Image.Image:
    """Over-exposure by ``stops`` EV in linear light, highlights clipping to white."""
    return _to_image(_linear_to_srgb(_srgb_to_linear(_as_float(img)) * 2.0 ** stops))


@_register("underexposure", (0.8, 1.6, 2.4, 3.2, 4.2))
def underexposure(img: Image.Image, stops: float, rng: np.random.Generator) -> Image.Image:
    """Under-exposure by ``stops`` EV in linear light; 8-bit quantisation crushes the shadows."""
    return _to_image(_linear_to_srgb(_srgb_to_linear(_as_float(img)) * 2.0 ** -stops))


@_register("saturation", (0.7, 0.5, 0.3, 0.15, 0.0))
def saturation(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Colour desaturation towards grey by ``factor`` (1 = unchanged, 0 = grey)."""
    return ImageEnhance.Color(img).enhance(factor)


@_register("oversaturation", (1.6, 2.2, 3.0, 4.0, 5.5))
def oversaturation(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Colour over-saturation away from grey by ``factor`` (channels clip: hue shifts, flat colour areas)."""
    return ImageEnhance.Color(img).enhance(factor)


def score_for_level(level: int) -> float:
    """The quality label of a distortion level on 0-100 (higher is better).

    Linear in the level for every type: level 0 (the reference) is 100 and level 5 is 10, i.e.
    ``100 - 18 * level``. It is an ordinal label, not a human opinion score: types are not
    calibrated against each other, so compare scores within a type or rank by level.
    """
    if not 0 <= level <= LEVELS:
        raise ValueError(f"level must be 0..{LEVELS}, got {level}")
    return 100.0 - 18.0 * level


def distort(img: Image.Image, name: str, level: int, rng: np.random.Generator) -> Image.Image:
    """Apply the registered distortion ``name`` at ``level`` (0 returns a copy of ``img``)."""
    if name not in DISTORTIONS:
        raise KeyError(f"unknown distortion {name!r}; known: {', '.join(DISTORTIONS)}")
    return img.convert("RGB").copy() if level == 0 else DISTORTIONS[name](img, level, rng)


# -- reference photos ------------------------------------------------------------------------

#: scikit-image's bundled colour photos (no download). ``cat`` is ``chelsea`` again and
#: ``colorwheel`` is synthetic, so both are left out; the motorcycle's two stereo views share a ref.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "stereo_motorcycle")
#: More photos that install with the project's dependencies (no download): scikit-learn's two
#: sample photos, matplotlib's portrait of Grace Hopper and PyWavelets' two grey-level photos (an
#: aerial view and people on a stairway; its third, ``camera``, is scikit-image's). name -> (package,
#: file or loader).
OTHER_BUNDLED_PHOTOS = {"china": ("sklearn", "china.jpg"), "flower": ("sklearn", "flower.jpg"),
                        "grace_hopper": ("matplotlib", "grace_hopper.jpg"), "aero": ("pywt", "aero"),
                        "ascent": ("pywt", "ascent")}
#: scikit-image's bundled grey-level photos and textures (used as RGB). Colour-only distortions
#: (:data:`COLOUR_ONLY`) are skipped for them: desaturating a grey photo changes nothing.
SKIMAGE_GREY_PHOTOS = ("camera", "moon", "coins", "brick", "grass", "gravel", "cell")
#: Photos that Debian packages of desktop wallpapers install (``apt-get install mate-backgrounds
#: plasma-workspace-wallpapers``; GPL-2+), for candidate recipes only: no pip install brings them.
#: Only the real photographs among the wallpapers, and of those none whose look is one of the
#: distortions (motion blur, fog, a frame mostly out of focus). name -> (Debian package, path).
#: Wallpapers are JPEGs at desktop sizes; each enters whole, downscaled (Lanczos) to the references'
#: size, so its compression at pixel scale does not enter a pristine reference.
DEBIAN_PHOTOS = {
    **{f"mate_{n.lower()}": ("mate-backgrounds", f"/usr/share/backgrounds/mate/nature/{n}.jpg")
       for n in ("Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Wood",
                 "YellowFlower")},
    **{f"kde_{n.lower()}": ("plasma-workspace-wallpapers", f"/usr/share/wallpapers/{n}/contents/images/2560x1600.jpg")
       for n in ("ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "OneStandsOut", "Path", "summer_1am")},
}
BUNDLED_PHOTOS = SKIMAGE_PHOTOS + tuple(OTHER_BUNDLED_PHOTOS) + SKIMAGE_GREY_PHOTOS + tuple(DEBIAN_PHOTOS)
#: Bundled images that carry one of the distortions on purpose, as their package documents: a
#: reference is labelled pristine, so these are refused as references. (``moon``, documented as low
#: contrast, and ``cell``, with a banding artifact, stay: leaving them out of training measured
#: worse on validation, see the model card.)
DEGRADED_PHOTOS = {
    "clock": "motion-blurred on purpose (scikit-image's example for deconvolution)",
}
COLOUR_ONLY = frozenset({"saturation", "oversaturation"})
LABEL_COLUMNS = ("path", "score", "ref", "distortion", "level", "part")


@dataclass(frozen=True)
class Reference:
    """One reference image. ``ref`` is the split group (the photo or scene); ``part`` numbers the
    tiles or stereo views cut from it, so tiles of one photo never land on both sides of a split."""

    ref: str
    part: int
    image: Image.Image


def cut_tiles(img: Image.Image, size: int, max_tiles: int, *, aspect: float = 4 / 3,
              dark_fraction: float = 0.25, min_std: float = 6.0) -> list[Image.Image]:
    """Non-overlapping tiles of ``size`` x ``size*aspect`` (short side ``size``) at native resolution.

    Returns ``[]`` when fewer than two tiles fit. Tiles that are mostly black (over
    ``dark_fraction`` of pixels under 16, e.g. a retina scan's surround) or flat (luminance std
    under ``min_std``) are left out; of the rest, the ``max_tiles`` most textured are kept, in
    raster order.
    """
    w, h = img.size
    tw, th = (round(size * aspect), size) if w >= h else (size, round(size * aspect))
    cols, rows = w // tw, h // th
    if cols * rows < 2 or max_tiles < 2:
        return []
    x0, y0 = (w - cols * tw) // 2, (h - rows * th) // 2
    kept: list[tuple[float, int, Image.Image]] = []
    for i, (r, c) in enumerate((r, c) for r in range(rows) for c in range(cols)):
        tile = img.crop((x0 + c * tw, y0 + r * th, x0 + (c + 1) * tw, y0 + (r + 1) * th))
        lum = np.asarray(tile.convert("L"), dtype=np.float32)
        if (lum < 16).mean() > dark_fraction or lum.std() < min_std:
            continue
        kept.append((float(lum.std()), i, tile))
    best = sorted(kept, key=lambda t: -t[0])[:max_tiles]
    return [tile for _, _, tile in sorted(best, key=lambda t: t[1])]


def _other_bundled_photo(name: str) -> Image.Image:
    package, filename = OTHER_BUNDLED_PHOTOS[name]
    try:
        if package == "sklearn":
            from sklearn.datasets import load_sample_image

            return Image.fromarray(load_sample_image(filename)).convert("RGB")
        if package == "pywt":
            import pywt.data

            return Image.fromarray(getattr(pywt.data, filename)()).convert("RGB")
        from matplotlib import cbook

        with cbook.get_sample_data(filename) as fh:
            return Image.open(fh).convert("RGB")
    except ImportError as exc:
        raise DatasetError(f"bundled photo {name!r} comes with {package}: pip install 'glia-edge[train]'") from exc


def _debian_photo(name: str, size: int) -> Image.Image:
    # Downscaled here, at the source: at the references' size no two tiles fit, so the photo enters whole.
    package, path = DEBIAN_PHOTOS[name]
    if not Path(path).is_file():
        raise DatasetError(f"photo {name!r} comes with the Debian package {package}: apt-get install {package}")
    return resize_short_side(load_image(path), size, "lanczos")


def _skimage_sources(names: Sequence[str], size: int = 384) -> Iterator[tuple[str, list[Image.Image]]]:
    try:
        import skimage.data
    except ImportError as exc:
        raise DatasetError("scikit-image is needed for the bundled reference photos "
                           "(pip install 'glia-edge[train]'), or pass a folder of your own") from exc
    for name in names:
        if name in OTHER_BUNDLED_PHOTOS:
            yield name, [_other_bundled_photo(name)]
            continue
        if name in DEBIAN_PHOTOS:
            yield name, [_debian_photo(name, size)]
            continue
        if is_dead_leaves(name):  # generated, not a photo (glia_edge.dead_leaves)
            yield name, [dead_leaves_named(name)]
            continue
        if name in DEGRADED_PHOTOS:
            raise DatasetError(f"bundled photo {name!r} cannot be a pristine reference: {DEGRADED_PHOTOS[name]}")
        if name not in SKIMAGE_PHOTOS + SKIMAGE_GREY_PHOTOS:
            raise DatasetError(f"unknown bundled photo {name!r}; known: {', '.join(BUNDLED_PHOTOS)}, "
                               "dead_leaves_<k>")
        data = getattr(skimage.data, name)()
        arrays = data[:2] if name == "stereo_motorcycle" else (data,)
        yield name.removeprefix("stereo_"), [Image.fromarray(a).convert("RGB") for a in arrays]


def _folder_sources(folder: Path) -> Iterator[tuple[str, list[Image.Image]]]:
    if folder.is_file():
        raise DatasetError(f"{folder}: is a file, not a folder of reference photos")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: reference folder not found")
    seen: set[str] = set()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
        try:
            img = load_image(path)
        except ImageLoadError as exc:
            log.warning("skipping reference %s", exc)
            continue
        name = re.sub(r"[^A-Za-z0-9_.]+", "_", path.stem)
        base, n = name, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        yield name, [img]


def reference_images(source: str | Path | None = None, *, names: Sequence[str] | None = None, size: int = 384,
                     max_tiles: int = 4, grey_copies: bool = False) -> list[Reference]:
    """Reference photos, short side resized to ``size``; large ones cut into up to ``max_tiles`` tiles.

    ``source`` is a folder of images (unreadable files are logged with their path and skipped) or
    ``None`` for scikit-image's bundled photos (``names`` picks some of :data:`SKIMAGE_PHOTOS`).
    ``grey_copies`` adds a grey-level copy of every colour part as a further reference of the same
    photo (numbered after its colour parts, same split group): a black-and-white photo is pristine
    content, not a distortion. Raises :class:`DatasetError` when no usable image is found.
    """
    sources = _folder_sources(Path(source)) if source is not None else _skimage_sources(names or SKIMAGE_PHOTOS, size)
    refs: list[Reference] = []
    for ref, views in sources:
        parts = [t for view in views for t in (cut_tiles(view, size, max_tiles) or [view])]
        colour = [resize_short_side(p, size, "lanczos") for p in parts]
        grey = [p.convert("L").convert("RGB") for p in colour if not is_grey(p)] if grey_copies else []
        refs += [Reference(ref, i, p) for i, p in enumerate(colour + grey)]
    if not refs:
        raise DatasetError(f"{source}: no usable reference images")
    return refs


# -- dataset writer --------------------------------------------------------------------------

def _rng(seed: int, *key: object) -> np.random.Generator:
    # One stream per image from stable hashes, so an image does not depend on which others are made.
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in key)])


def _check_types(types: Sequence[str] | None) -> list[str]:
    chosen = list(types) if types else list(DISTORTIONS)
    unknown = [t for t in chosen if t not in DISTORTIONS]
    if unknown:
        raise ValueError(f"unknown distortion type(s) {unknown}; known: {', '.join(DISTORTIONS)}")
    return chosen


def is_grey(img: Image.Image) -> bool:
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    return bool(np.abs(arr[..., 0] - arr[..., 1]).max() <= 2 and np.abs(arr[..., 1] - arr[..., 2]).max() <= 2)


def _write_images(root: Path, refs: Sequence[Reference], types: Sequence[str], levels: int, seed: int,
                  progress: bool) -> list[dict[str, object]]:
    from rich.console import Console
    from rich.progress import track

    (root / "images").mkdir(parents=True)
    rows: list[dict[str, object]] = []
    console = Console(stderr=True)  # stdout carries results; the bar only on a terminal, as score and batch
    for ref in track(refs, description="distorting", console=console, transient=True,
                     disable=not (progress and console.is_terminal)):
        stem = f"{ref.ref}-{ref.part}"
        kept = [t for t in types if not (t in COLOUR_ONLY and is_grey(ref.image))]
        if len(kept) < len(types):
            log.info("%s is grey: no %s series", stem, ", ".join(sorted(set(types) - set(kept))))
        jobs = [("none", 0)] + [(t, lv) for t in kept for lv in range(1, levels + 1)]
        pixels = np.asarray(ref.image.convert("RGB"))
        unchanged: dict[str, list[int]] = {}
        for name, level in jobs:
            rel = f"images/{stem}-ref.png" if level == 0 else f"images/{stem}-{name}-{level}.png"
            img = distort(ref.image, name, level, _rng(seed, ref.ref, ref.part, name, level)) if level \
                else ref.image
            if level and np.array_equal(np.asarray(img), pixels):
                unchanged.setdefault(name, []).append(level)
            img.save(root / rel, compress_level=1)
            rows.append({"path": rel, "score": score_for_level(level), "ref": ref.ref, "distortion": name,
                         "level": level, "part": ref.part})
        _warn_unchanged(stem, unchanged)
    return rows


def _warn_unchanged(stem: str, unchanged: dict[str, list[int]]) -> None:
    """A level pixel-identical to its reference (blur on a flat image, say) is labelled degraded
    all the same: a label the image does not carry. Named, so the reference can be replaced."""
    for name, lv in unchanged.items():
        log.warning("reference %s: %s level(s) %s leave the image pixel-identical to the reference, yet are "
                    "labelled as degraded (a flat or tiny reference?)", stem, name, ",".join(map(str, lv)))


def make_dataset(out_dir: str | Path, refs: Sequence[Reference] | str | Path | None = None,
                 types: Sequence[str] | None = None, levels: int = LEVELS, seed: int = 0, size: int = 384, *,
                 max_tiles: int = 4, overwrite: bool = False, progress: bool = False) -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/labels.csv``; returns the CSV's path.

    ``refs`` is a list of :class:`Reference`, a folder, or ``None`` (bundled photos). Every
    reference gets a level-0 row (``distortion`` ``none``, score 100) and levels ``1..levels`` of
    each type in ``types`` (default: all of :data:`DISTORTIONS`). The set is built in a temporary
    folder beside ``out_dir`` and renamed into place, so a failure leaves nothing half-written.
    """
    if not 1 <= levels <= LEVELS:
        raise ValueError(f"levels must be 1..{LEVELS}, got {levels}")
    chosen = _check_types(types)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: is a file; the synthetic set is a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out}: already exists and is not empty (use --overwrite to replace it)")
    if refs is None or isinstance(refs, (str, Path)):
        refs = reference_images(refs, size=size, max_tiles=max_tiles)
    with staging_dir(out) as tmp:
        rows = _write_images(tmp, refs, chosen, levels, seed, progress)
        with open(tmp / "labels.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        replace_path(tmp, out)
    log.debug("wrote %d images of %d references to %s", len(rows), len(refs), out)
    return out / "labels.csv"


__all__ = ["BUNDLED_PHOTOS", "COLOUR_ONLY", "DEGRADED_PHOTOS", "DISTORTIONS", "LABEL_COLUMNS", "LEVELS",
           "SKIMAGE_PHOTOS", "SKIMAGE_GREY_PHOTOS", "DistortionFn", "is_grey", "Reference",
           "cut_tiles", "distort", "encode", "make_dataset", "reference_images", "score_for_level"]
