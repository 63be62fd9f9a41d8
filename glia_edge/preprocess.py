"""The one preprocessing definition of glia-edge (numpy + PIL, no torch; OpenCV used when installed).

Training, export calibration, the accuracy gate and every runtime call these functions, so a
score means the same thing whichever backend produced it. The steps (``PreprocessConfig``,
version 2):

1. decode (path, bytes or a binary file object, PIL image or numpy array), apply the EXIF
   orientation, convert to 8-bit RGB (grayscale is replicated, alpha is dropped, 16-bit is scaled
   down). A JPEG (a path, its bytes, or a PIL image opened and not yet loaded) is decoded at
   reduced size where libjpeg's DCT scaling allows (Pillow's ``draft``: 1/2, 1/4 or 1/8, the
   smallest scale whose short side stays >= ``short_side``). An array (or a loaded PIL image) is
   already decoded at full size, so a large JPEG's pixels as an array score slightly differently
   from the JPEG file;
2. area-average: an image whose short side is still >= 2 x ``short_side`` is averaged over
   f x f blocks, f = short side // ``short_side`` (the largest integer factor that keeps the
   short side >= ``short_side``; the few rows/columns left over are trimmed evenly from both
   edges). Numpy frames are averaged in OpenCV (``INTER_AREA``) when it is installed, before
   any PIL copy, PIL images with ``Image.reduce``;
3. resize so the short side is ``short_side`` (bicubic, PIL), now a small image;
4. cut a deterministic grid of 1, 5 or 9 square crops of ``crop_size``;
5. return float32 NCHW in [0, 1]. The backbone's normalisation lives inside the model graph
   (each artifact records the mean/std it applies: ``ArtifactMeta.input``).

Version 1 (``PreprocessConfig(version=1)``) is the earlier exact pipeline: full decode and one
bicubic resize from full size. It is kept as the reference the fast path is tested against, and
as the "old decode path" of the benchmark. Data cached after step 3 (the SPAQ copies) carry the
version and are rebuilt when it changes.

With one crop, :func:`preprocess` takes version 2's :func:`centre_crop`: steps 2-4 computed on
only the rows and columns the crop reads. Its pixels equal the steps above except for about 0.02%
of them, which differ by one level (PIL's float32 resize box; bounded in
tests/test_preprocess_crop.py).

Training's random crops and flips (``random_crop``) reuse steps 1-3 and the same crop cutter.
"""
from __future__ import annotations

import errno
import glob
import io
import logging
import math
import os
import stat
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from glia_edge.errors import ImageLoadError, one_line, printable

log = logging.getLogger(__name__)

#: Images above this many pixels are refused (decompression-bomb guard); 100 MP covers any camera.
MAX_PIXELS_DEFAULT = 100_000_000
CROP_COUNTS = (1, 5, 9)
#: The current preprocessing definition (see the module docstring); 1 is the earlier exact one.
PREPROCESS_VERSION = 2
PREPROCESS_VERSIONS = (1, 2)
#: Suffixes of the raster formats Pillow decodes itself (animations and multi-page files score
#: their first frame). Left out: formats Pillow hands to outside programs (EPS/PS: Ghostscript;
#: WMF/EMF: Windows), can only identify (MPEG; BUFR, GRIB, HDF5 without a handler) or only
#: writes (PDF, Palm). ``tests/test_score_cli.py`` checks this list against Pillow's registry.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif",
                  ".avif", ".avifs", ".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".j2c", ".mpo", ".pbm", ".pgm", ".ppm",
                  ".pnm", ".pfm", ".qoi", ".tga", ".icb", ".vda", ".vst", ".ico", ".cur", ".icns", ".dds", ".blp",
                  ".pcx", ".dcx", ".psd", ".sgi", ".bw", ".rgb", ".rgba", ".ras", ".im", ".msp", ".xbm", ".xpm",
                  ".fli", ".flc", ".ftc", ".ftu", ".gbr", ".pcd", ".pxr", ".fit", ".fits")

#: One image: a path, its bytes (or a memoryview, or a binary file object, read to the end), a PIL
#: image or an HxW[xC] array.
ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns an image into model input; stored in checkpoints and artifacts."""

    short_side: int = 384
    crop_size: int = 224
    crops: int = 1
    resample: str = "bicubic"
    max_pixels: int = MAX_PIXELS_DEFAULT
    #: Which definition: 2 = reduced-size JPEG decode + area-average + bicubic, 1 = exact full decode.
    #: Metadata written before versions existed reads as version 1, the definition it was made
    #: with: version 2 moves scores of large inputs beyond the parity bound (benchmarks/RESULTS.md).
    version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        if self.version not in PREPROCESS_VERSIONS:
            raise ValueError(f"preprocessing version must be one of {PREPROCESS_VERSIONS}, got {self.version}")
        check_crops(self.crops, none_ok=False)
        if self.short_side < self.crop_size:
            raise ValueError(f"short_side ({self.short_side}) must be >= crop_size ({self.crop_size})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        return cls(**{"version": 1, **{k: v for k, v in data.items() if k in cls.__dataclass_fields__}})

    def replace(self, **changes: Any) -> "PreprocessConfig":
        return PreprocessConfig.from_dict({**self.to_dict(), **changes})


_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "lanczos": Image.Resampling.LANCZOS}


def check_crops(crops: int | None, *, none_ok: bool = True) -> None:
    """``crops`` is one of :data:`CROP_COUNTS` (or None, the config's count, where ``none_ok``); else ``ValueError``."""
    if (crops is None and not none_ok) or (crops is not None and (isinstance(crops, bool) or crops not in CROP_COUNTS)):
        raise ValueError(f"crops must be one of {CROP_COUNTS}, got {crops}")


def _is_file_object(source: object) -> bool:
    return callable(getattr(source, "read", None))


def is_one_image(source: object) -> bool:
    """Whether ``source`` is one image input (a path, bytes, a memoryview, a file object, a PIL image,
    an array), not a collection of them: str, bytes, files and arrays are iterable too, into
    characters, ints, lines or pixel rows. An array is one image unless it is 4-D (a stack of
    frames) or a 1-D array of paths (dtype object or str, e.g. a pandas column's values): a 1-D
    pixel buffer then gets the single image's shape error instead of one error per element."""
    if isinstance(source, np.ndarray):
        return not (source.ndim == 4 or (source.ndim == 1 and source.dtype.kind in "OUS"))
    return isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or _is_file_object(source)


def describe(source: object) -> str:
    """A short name for an input: a path as given (results are keyed by it), else its kind. Error
    messages take :func:`printable` of it (:func:`_error_name`)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array shape={source.shape} dtype={source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    if _is_file_object(source) and isinstance(name, str):
        return f"<{type(source).__name__} {name}>"
    return f"<{type(source).__name__}>"


def _error_name(source: object) -> str:
    """How an :class:`ImageLoadError` names ``source``: :func:`describe`, made :func:`printable`."""
    return printable(describe(source))


def _16_to_8(arr: np.ndarray) -> np.ndarray:
    """16-bit values (0-65535) to the nearest 8-bit level: one rule for 16-bit files and arrays
    (x * 255 / 65535 never falls halfway between two levels, so there are no ties to break)."""
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Modes Pillow converts to RGB directly (alpha dropped, not composited: quality is judged on what
#: was captured); "La" (premultiplied alpha) goes through "LA" first.
_CONVERTIBLE_MODES = ("RGBA", "LA", "PA", "RGBa", "L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def mode_problem(mode: str) -> str | None:
    """Why images of PIL mode ``mode`` cannot be scored, or None: one rule for decoding and for the
    datasets' up-front check (a float image is refused before training, not once per crop)."""
    if mode == "F":
        return "unsupported image mode 'F' (32-bit float); save as 8- or 16-bit"
    if mode not in ("RGB", "La", *_16BIT_MODES, *_CONVERTIBLE_MODES):
        return f"unsupported image mode {mode!r}"
    return None


def _to_rgb8(img: Image.Image, name: str) -> Image.Image:
    """Convert any still-image mode PIL decodes to 8-bit RGB, or raise naming the mode."""
    mode = img.mode
    problem = mode_problem(mode)
    if problem:
        raise ImageLoadError(name, problem)
    if mode == "RGB":
        return img
    if mode in _16BIT_MODES:
        # Mode "I" is read as 16-bit whatever its values (Pillow opens 16-bit PGM and some PNGs as
        # "I"): guessing the depth from the content would rescale a dark image by one bright pixel.
        arr = np.asarray(img)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageLoadError(name, "32-bit integer image with values outside 0-65535; save as 8- or 16-bit")
        return Image.fromarray(_16_to_8(arr), "L").convert("RGB")
    if mode == "La":  # premultiplied alpha, which Pillow converts only to LA: un-premultiply first
        img = img.convert("LA")
    return img.convert("RGB")


def _array_to_rgb8(arr: np.ndarray, name: str) -> np.ndarray:
    """Check an HxW, HxWx1, HxWx3 or HxWx4 array and bring it to uint8 HxW or HxWx3 (channel order
    kept, alpha dropped); uint8 input is not copied."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageLoadError(name, f"expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(name, "empty array")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = _16_to_8(arr)
    elif arr.dtype in (np.float32, np.float64):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise ImageLoadError(name, "float arrays must hold finite values in [0, 1]")
        arr = np.round(arr * 255.0).astype(np.uint8)
    else:
        raise ImageLoadError(name, f"unsupported array dtype {arr.dtype} (use uint8, uint16 or float in [0,1])")
    return arr[:, :, :3] if arr.ndim == 3 else arr


def _rgb8_to_pil(arr: np.ndarray, bgr: bool) -> Image.Image:
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr)
        if bgr:  # Pillow's raw BGR unpacker swaps the channels while it copies: one pass, no flipped copy
            return Image.frombuffer("RGB", (arr.shape[1], arr.shape[0]), arr, "raw", "BGR", 0, 1)
        return Image.fromarray(arr, "RGB")
    return Image.fromarray(np.ascontiguousarray(arr), "L").convert("RGB")


def allow_pillow_pixels(max_pixels: int) -> None:
    """Let ``max_pixels`` govern in this process: Pillow refuses images over twice its own
    ``MAX_IMAGE_PIXELS`` (about 179 MP) inside ``Image.open``, before this module's guard, which
    checks the same header size, could allow them. Process-wide, so only a process that serves one
    limit (``score``, a Ray batch or serve worker) raises it, and only when ``max_pixels`` is over
    Pillow's refusal point; it is never lowered."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _os_reason(exc: OSError) -> str:
    """Why the OS refused a path, as a reason: ``file not found``, ``symbolic link loop``, else
    ``cannot access (Permission denied)``, ``cannot access (File name too long)``..."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "file not found"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot access ({exc.strerror or exc})"


def _decode_error(name: str, exc: Exception) -> ImageLoadError:
    """What an exception from Pillow's ``open``/``load`` means for input ``name``. Decoders raise
    more than OSError on hostile bytes (a TIFF tag: TypeError; the AVIF plugin: RuntimeError), so
    every ``Exception`` is one bad input here; callers let MemoryError and KeyboardInterrupt pass."""
    if isinstance(exc, UnidentifiedImageError):
        return ImageLoadError(name, "not an image (format not recognised)")
    if isinstance(exc, Image.DecompressionBombError):
        # Pillow's own guard (PIL.Image.MAX_IMAGE_PIXELS, checked inside Image.open) refused it
        # before ``max_pixels`` could: say whose limit it was.
        return ImageLoadError(name, f"over Pillow's decompression bomb limit (PIL.Image.MAX_IMAGE_PIXELS): {exc}")
    if isinstance(exc, OSError) and exc.filename is not None:  # opening the file failed, not decoding it
        return ImageLoadError(name, _os_reason(exc))
    if isinstance(exc, (OSError, SyntaxError, ValueError)):
        return ImageLoadError(name, f"corrupt or truncated image ({exc})")
    return ImageLoadError(name, f"corrupt image ({one_line(exc)})")


def _check_pixels(width: int, height: int, max_pixels: int, name: str, guard: str = "") -> None:
    if width * height > max_pixels:
        raise ImageLoadError(name, f"image has {width * height} pixels, over the limit of {max_pixels}{guard}")


def _pil_to_rgb8(img: Image.Image, name: str, max_pixels: int, draft_short_side: int | None) -> Image.Image:
    """A caller's PIL image, EXIF-oriented and checked like a decoded file, as 8-bit RGB. A lazily
    opened JPEG (``Image.open``, not loaded yet) is decoded at reduced size as its path would be
    (``draft_short_side``), so both score alike; like ``img.draft``, that changes ``img`` itself."""
    if img.width == 0 or img.height == 0:
        raise ImageLoadError(name, "empty image (no pixels)")
    _check_pixels(img.width, img.height, max_pixels, name)
    try:
        if draft_short_side:
            _draft(img, draft_short_side)  # a no-op once loaded, and for other formats
        img.load()  # a lazily opened file decodes here, where its errors are caught
        return _to_rgb8(ImageOps.exif_transpose(img) or img, name)
    except ImageLoadError:
        raise
    except ValueError as exc:  # e.g. "Operation on closed image"
        raise ImageLoadError(name, f"unusable PIL image ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:
        raise _decode_error(name, exc) from None


def _file_source(source: ImageInput, name: str) -> Any:
    """What ``Image.open`` takes for a path or bytes, after the checks that name the problem."""
    if _is_file_object(source):
        source = _read_file_object(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageLoadError(name, "empty input")
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.fspath(source):  # Path("") would be ".", the current folder
            raise ImageLoadError(name, "empty path")
        try:
            info = os.stat(source)
        except OSError as exc:  # a folder without search permission, a name too long, a link loop
            raise ImageLoadError(name, _os_reason(exc)) from None
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(name, "is a directory, not an image")
        if info.st_size == 0:
            raise ImageLoadError(name, "empty file")
        return Path(source)
    raise ImageLoadError(name, f"unsupported input type {type(source).__name__} "
                         "(use a path, bytes, a binary file object, PIL image or numpy array)")


def _read_file_object(source: Any, name: str) -> bytes:
    """The rest of a binary file object's bytes (``open(path, "rb")``, ``BytesIO``, a socket's file)."""
    if isinstance(source, io.TextIOBase):
        raise ImageLoadError(name, "a text-mode file object: open the image in binary mode ('rb')")
    try:
        data = source.read()
    except (OSError, ValueError) as exc:  # e.g. "I/O operation on closed file"
        raise ImageLoadError(name, f"cannot read the file object ({exc})") from None
    if not isinstance(data, (bytes, bytearray)):
        raise ImageLoadError(name, f"the file object gave {type(data).__name__}, not bytes")
    return bytes(data)


#: Held around ``Image.open`` while Pillow's DecompressionBombWarning is ignored: the warnings
#: filter is process-wide, so the decode threads must not save and restore it over each other.
_OPEN_LOCK = threading.Lock()


def _open(fp: Any) -> Image.Image:
    """``Image.open`` without Pillow's two-line DecompressionBombWarning (images over 89 MP): the
    caller's ``max_pixels`` check governs and names the image in one line (:func:`_check_pixels`).
    Pillow's refusal (DecompressionBombError, over twice its limit) still comes through."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(fp)


def _draft(img: Image.Image, short_side: int) -> None:
    """Ask the decoder for the smallest DCT scale (JPEG: 1/2, 1/4, 1/8) whose short side stays
    >= ``short_side``: Pillow's ``draft`` picks the largest scale that keeps both sides >= the
    size asked for. Other formats ignore it."""
    w, h = img.size
    scale = short_side / min(w, h)
    if scale <= 0.5:
        img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))


def _decode_file(source: ImageInput, name: str, max_pixels: int, draft_short_side: int | None) -> Image.Image:
    """Decode a path or bytes to 8-bit RGB with EXIF orientation (DCT-scaled when asked)."""
    fp = _file_source(source, name)
    opened: Image.Image | None = None
    try:
        opened = _open(fp)
        _check_pixels(opened.width, opened.height, max_pixels, name, " (decompression bomb guard)")
        if getattr(opened, "is_animated", False):
            opened.seek(0)  # an animation or multi-page file: its first frame
        if draft_short_side:
            _draft(opened, draft_short_side)
        opened.load()
        img = ImageOps.exif_transpose(opened) or opened.copy()  # a new image: the frame, upright
    except (ImageLoadError, MemoryError):
        raise
    except Exception as exc:
        # Any decoder failure (a corrupt TIFF tag's TypeError, the AVIF plugin's RuntimeError) is
        # one bad input, one error row, not the end of a batch.
        raise _decode_error(name, exc) from None
    finally:
        # Pillow keeps some files open after load() (GIF, multi-frame): close every one (img is a copy).
        if opened is not None:
            opened.close()
    return _to_rgb8(img, name)


def load_image(source: ImageInput, *, bgr: bool = False, max_pixels: int = MAX_PIXELS_DEFAULT) -> Image.Image:
    """Decode ``source`` at full size into an 8-bit RGB PIL image with EXIF orientation applied.

    Raises :class:`ImageLoadError` naming the input and the reason for anything unusable:
    missing, empty, corrupt or non-image files, decompression bombs, unsupported modes or dtypes.
    ``bgr`` applies to numpy arrays only (OpenCV frames). Scoring decodes with :func:`load_reduced`.
    """
    name = _error_name(source)
    if isinstance(source, np.ndarray):
        rgb8 = _array_to_rgb8(source, name)
        _check_pixels(rgb8.shape[1], rgb8.shape[0], max_pixels, name)
        return _rgb8_to_pil(rgb8, bgr)
    if isinstance(source, Image.Image):
        return _pil_to_rgb8(source, name, max_pixels, None)
    return _decode_file(source, name, max_pixels, None)


# -- step 2: area-averaging ----------------------------------------------------------------------
def area_factor(width: int, height: int, short_side: int) -> int:
    """Block size of the area-averaging step: short side // ``short_side`` (1: nothing to do)."""
    return max(1, min(width, height) // short_side)


def _trim_box(width: int, height: int, factor: int) -> tuple[int, int, int, int]:
    """The centred region whose sides are multiples of ``factor``."""
    w, h = width // factor * factor, height // factor * factor
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def area_reduce(img: Image.Image, short_side: int) -> Image.Image:
    """Average ``img`` over f x f blocks (:func:`area_factor`); unchanged when f is 1."""
    factor = area_factor(img.width, img.height, short_side)
    if factor == 1:
        return img
    return img.reduce(factor, box=_trim_box(img.width, img.height, factor))


_CV2: Any = None


def _opencv() -> Any:
    """cv2, or False where OpenCV is not installed (imported once, on the first large frame)."""
    global _CV2
    if _CV2 is None:
        try:
            import cv2

            _CV2 = cv2
        except ImportError:
            _CV2 = False
    return _CV2


def area_reduce_array(arr: np.ndarray, short_side: int) -> np.ndarray:
    """:func:`area_reduce` for a uint8 HxW or HxWxC array, without a full-size PIL copy where OpenCV
    is installed (``INTER_AREA`` at an integer factor is the block mean); channel order is kept."""
    height, width = arr.shape[:2]
    factor = area_factor(width, height, short_side)
    if factor == 1:
        return arr
    left, top, right, bottom = _trim_box(width, height, factor)
    return _block_mean(arr[top:bottom, left:right], factor)


def _block_mean(region: np.ndarray, factor: int) -> np.ndarray:
    """The f x f block means of a uint8 array whose sides are multiples of ``factor``: OpenCV's
    ``INTER_AREA`` where installed, else PIL's ``reduce``. Each output pixel is computed from its
    own block alone, so a block-aligned part of a region gives that part of the region's result."""
    size = (region.shape[1] // factor, region.shape[0] // factor)
    cv2 = _opencv()
    if cv2:
        if region.ndim == 3 and region.strides[1] != region.shape[2] * region.itemsize:
            region = np.ascontiguousarray(region)  # an alpha channel was sliced off
        return cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(np.ascontiguousarray(region)).reduce(factor))


# -- steps 1-2 together --------------------------------------------------------------------------
def load_reduced(source: ImageInput, cfg: PreprocessConfig, *, bgr: bool = False) -> Image.Image:
    """Steps 1-2: ``source`` decoded (at reduced size where the format allows) and area-averaged
    into an 8-bit RGB PIL image, whose short side is then < 2 x ``short_side`` if it was larger.
    Version 1 gives the full-size image (:func:`load_image`)."""
    if cfg.version == 1:
        return load_image(source, bgr=bgr, max_pixels=cfg.max_pixels)
    decoded = _decode_v2(source, cfg)
    if isinstance(decoded, np.ndarray):
        return _rgb8_to_pil(area_reduce_array(decoded, cfg.short_side), bgr)
    return area_reduce(decoded, cfg.short_side)


def _decode_v2(source: ImageInput, cfg: PreprocessConfig) -> Union[np.ndarray, Image.Image]:
    """Version 2's step 1: a uint8 HxW or HxWx3 array in the caller's channel order (arrays, not
    copied), or an 8-bit RGB PIL image (files decoded at reduced size, PIL images)."""
    name = _error_name(source)
    if isinstance(source, np.ndarray):
        rgb8 = _array_to_rgb8(source, name)
        _check_pixels(rgb8.shape[1], rgb8.shape[0], cfg.max_pixels, name)
        return rgb8
    if isinstance(source, Image.Image):
        return _pil_to_rgb8(source, name, cfg.max_pixels, cfg.short_side)
    return _decode_file(source, name, cfg.max_pixels, cfg.short_side)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The size :func:`resize_short_side` gives: min(width, height) == short_side, aspect kept."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def resize_short_side(img: Image.Image, short_side: int, resample: str = "bicubic") -> Image.Image:
    """Resize so min(width, height) == short_side, keeping the aspect ratio."""
    new_w, new_h = resized_size(img.width, img.height, short_side)
    if (new_w, new_h) == img.size:
        return img
    return img.resize((new_w, new_h), _RESAMPLE[resample])


def crop_boxes(width: int, height: int, crop_size: int, crops: int) -> list[tuple[int, int, int, int]]:
    """Deterministic crop grid: 1 = centre, 5 = four corners + centre, 9 = 3x3 evenly spaced.

    Boxes are (left, top, right, bottom) as PIL takes them.
    """
    check_crops(crops, none_ok=False)
    if width < crop_size or height < crop_size:
        raise ValueError(f"image {width}x{height} is smaller than the crop {crop_size}")
    max_x, max_y = width - crop_size, height - crop_size
    cx, cy = max_x // 2, max_y // 2
    if crops == 1:
        origins = [(cx, cy)]
    elif crops == 5:
        origins = [(0, 0), (max_x, 0), (0, max_y), (max_x, max_y), (cx, cy)]
    else:
        xs = [0, cx, max_x]
        ys = [0, cy, max_y]
        origins = [(x, y) for y in ys for x in xs]
    return [(x, y, x + crop_size, y + crop_size) for x, y in origins]


def to_chw_float(img: Image.Image) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32 in [0, 1] (step 5 on one image: :func:`crops_to_float`)."""
    return crops_to_float(np.asarray(img)[None])[0]


def prepare(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Steps 2-3 on a decoded RGB image: area-average (version 2) and resize to the short side."""
    if cfg.version != 1:
        img = area_reduce(img, cfg.short_side)
    return resize_short_side(img, cfg.short_side, cfg.resample)


def _check_resized(width: int, height: int, cfg: PreprocessConfig, source: ImageInput) -> None:
    """``max_pixels`` bounds the resized image too, whatever the crop count: a small image of
    extreme aspect ratio (2 x 4000 px becomes 384 x 768,000) is refused, by the one rule that
    :func:`load_resized` (which holds it whole) and :func:`centre_crop` (which would not) share."""
    new_w, new_h = resized_size(width, height, cfg.short_side)
    if new_w * new_h > cfg.max_pixels:
        raise ImageLoadError(_error_name(source), f"a {width}x{height} image resized to a short side of "
                             f"{cfg.short_side} would have {new_w * new_h} pixels, over the limit of "
                             f"{cfg.max_pixels} (aspect ratio {max(new_w, new_h) / min(new_w, new_h):.0f}:1)")


def load_resized(source: ImageInput, cfg: PreprocessConfig, *, bgr: bool = False) -> Image.Image:
    """Steps 1-3: ``source`` decoded and resized to the configured short side (training, caches);
    an extreme aspect ratio is refused (:func:`_check_resized`)."""
    img = load_reduced(source, cfg, bgr=bgr)
    _check_resized(img.width, img.height, cfg, source)
    return prepare(img, cfg)


def _grid(resized: Image.Image, cfg: PreprocessConfig, crops: int | None) -> np.ndarray:
    """Step 4 on a resized image: its (n, S, S, 3) uint8 crops."""
    boxes = crop_boxes(resized.width, resized.height, cfg.crop_size, cfg.crops if crops is None else crops)
    return np.stack([np.asarray(resized.crop(b)) for b in boxes])


def crops_to_float(crops: np.ndarray) -> np.ndarray:
    """Step 5: (n, S, S, 3) uint8 RGB crops -> (n, 3, S, S) float32 in [0, 1]."""
    out = np.asarray(crops).transpose(0, 3, 1, 2).astype(np.float32, order="C")  # one contiguous copy
    out /= np.float32(255.0)
    return out


def crops_from_image(img: Image.Image, cfg: PreprocessConfig, crops: int | None = None) -> np.ndarray:
    """Steps 2-5 on an already-decoded RGB image: (n, 3, S, S) float32 crops in [0, 1]."""
    return crops_to_float(_grid(prepare(img, cfg), cfg, crops))


# -- version 2, one centre crop: computed only where the crop reads (within one level) ---------------
#: The most the fast centre crop's pixels differ from the whole-image steps, in 8-bit levels.
CENTRE_CROP_MAX_LEVELS = 1
#: How far each PIL filter reaches at scale 1, in source pixels (PIL's ``support``).
_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0, "lanczos": 3.0}


def _source_span(lo: int, hi: int, in_size: int, out_size: int, support: float) -> tuple[int, int]:
    """The source indices one pass of PIL's resampling (``in_size`` -> ``out_size`` along one axis,
    whole-image box) reads for outputs ``lo..hi-1``, as a superset: PIL reads, for output ``i``,
    ``int(c - r + 0.5) .. int(c + r + 0.5) - 1`` with ``c = (i + 0.5) * scale`` and ``r`` the
    filter's reach; two pixels of margin cover any rounding. Clipped to the source."""
    if in_size == out_size:  # PIL skips this pass: output i is input i
        return lo, hi
    scale = in_size / out_size
    reach = support * max(scale, 1.0)
    return (max(0, math.floor((lo + 0.5) * scale - reach) - 2),
            min(in_size, math.ceil((hi - 0.5) * scale + reach) + 2))


def _pillow_may_go_vertical_first(width: int, height: int, new_w: int, new_h: int) -> bool:
    """Whether some Pillow release resizes ``width`` x ``height`` -> ``new_w`` x ``new_h`` with the
    vertical pass first (13: ``ImagingResampleInner``; 12.2-12.3: ``Image.resize`` for 100:1)."""
    return (height - new_h > 0 and height - new_h > 2 * (width - new_w)) or (height > 100 * width and new_h < height)


def _crop_after_resize(width: int, height: int, part: Callable[[int, int, int, int], Image.Image],
                       cfg: PreprocessConfig) -> np.ndarray:
    """The centre crop of ``resize_short_side(img, ...)`` for a ``width`` x ``height`` image ``img``
    of which only ``part(x0, y0, x1, y1)`` (that box of it, as a PIL image) is computed.

    PIL resizes in two passes, horizontal then vertical, the first rounded to 8 bits. Here the
    same two passes run in the same order, each as a one-axis PIL ``resize`` whose ``box`` selects
    only the outputs the crop keeps: the horizontal pass makes the crop's columns from the rows the
    vertical pass reads, the vertical pass makes the crop's rows. That is a third of the work for
    a 1080p frame. The box's edges are the crop's edges in source coordinates, which PIL takes as
    float32, so a filter centre can move by about 1e-5 px: a pixel then differs from the whole-image
    resize by one level, on about 0.02% of the crop's pixels (at most 1 level, tested). The part
    read keeps two pixels beyond the filter's reach, or ends where the image ends, so PIL clips
    its taps at the same image edges as the whole-image resize.

    Pillow runs the vertical pass first for tall images (12.2+: taller than 100:1; 13+: height
    reduced by more than twice the width); those take the whole image through PIL's own resize.
    """
    new_w, new_h = resized_size(width, height, cfg.short_side)
    (cx0, cy0, cx1, cy1), = crop_boxes(new_w, new_h, cfg.crop_size, 1)
    if (new_w, new_h) == (width, height):  # resize_short_side leaves it as it is
        return np.asarray(part(cx0, cy0, cx1, cy1))
    resample, support = _RESAMPLE[cfg.resample], _SUPPORT[cfg.resample]
    if _pillow_may_go_vertical_first(width, height, new_w, new_h):
        whole = part(0, 0, width, height).resize((new_w, new_h), resample)  # = resize_short_side
        return np.asarray(whole.crop((cx0, cy0, cx1, cy1)))
    x0, x1 = _source_span(cx0, cx1, width, new_w, support)
    y0, y1 = _source_span(cy0, cy1, height, new_h, support)
    sx, sy = width / new_w, height / new_h
    src = part(x0, y0, x1, y1)
    across = src.resize((cx1 - cx0, y1 - y0), resample, box=(cx0 * sx - x0, 0, cx1 * sx - x0, y1 - y0))
    down = across.resize((cx1 - cx0, cy1 - cy0), resample, box=(0, cy0 * sy - y0, cx1 - cx0, cy1 * sy - y0))
    return np.asarray(down)


def centre_crop(source: ImageInput, cfg: PreprocessConfig, *, bgr: bool = False) -> np.ndarray:
    """Version 2's one centre crop of ``source`` as an (S, S, 3) uint8 RGB array.

    The pixels of ``crops_from_image(load_reduced(source, cfg, bgr=bgr), cfg, 1)`` to within one
    level on about 0.02% of them (:func:`_crop_after_resize`; bounded in
    tests/test_preprocess_crop.py), but area-averaging and the bicubic resize run only on the
    rows and columns the crop depends on, and frames never become a PIL image larger than their
    part of it: a 1080p frame costs about a quarter of the whole-frame path. Channel order is
    swapped (``bgr``) on the small part, as every later step treats channels alike.
    """
    if cfg.version == 1:
        raise ValueError("centre_crop is version 2's; version 1 resizes the full image (load_image)")
    decoded = _decode_v2(source, cfg)
    short = cfg.short_side
    if isinstance(decoded, np.ndarray):
        arr = decoded
        height, width = arr.shape[:2]
        factor = area_factor(width, height, short)
        left, top, right, bottom = _trim_box(width, height, factor)

        def part(x0: int, y0: int, x1: int, y1: int) -> Image.Image:
            if factor == 1:
                return _rgb8_to_pil(arr[y0:y1, x0:x1], bgr)
            f = factor
            return _rgb8_to_pil(_block_mean(arr[top + f * y0:top + f * y1, left + f * x0:left + f * x1], f), bgr)
    else:
        img = decoded
        width, height = img.size
        factor = area_factor(width, height, short)
        left, top, right, bottom = _trim_box(width, height, factor)

        def part(x0: int, y0: int, x1: int, y1: int) -> Image.Image:
            if factor == 1:
                return img.crop((x0, y0, x1, y1))
            f = factor
            return img.reduce(f, box=(left + f * x0, top + f * y0, left + f * x1, top + f * y1))
    width, height = (right - left) // factor, (bottom - top) // factor
    _check_resized(width, height, cfg, source)  # the grid crops' rule, so 1, 5 and 9 crops agree
    return _crop_after_resize(width, height, part, cfg)


def preprocess(source: ImageInput, cfg: PreprocessConfig | None = None, *, crops: int | None = None,
               bgr: bool = False) -> np.ndarray:
    """Decode and preprocess one image into its crop batch: (n_crops, 3, S, S) float32 in [0, 1]."""
    return crops_to_float(crops_uint8(source, cfg, crops=crops, bgr=bgr))


def crops_uint8(source: ImageInput, cfg: PreprocessConfig | None = None, *, crops: int | None = None,
                bgr: bool = False) -> np.ndarray:
    """Steps 1-4: the (n_crops, S, S, 3) uint8 RGB crops :func:`preprocess` scores, a quarter of
    its bytes (what Ray's decode tasks and Serve hand to inference; :func:`crops_to_float` is step 5).

    Version 2 with one crop takes :func:`centre_crop` (the same pixels within one level, less work)."""
    cfg = cfg or PreprocessConfig()
    check_crops(crops)
    if cfg.version != 1 and (cfg.crops if crops is None else crops) == 1:
        return centre_crop(source, cfg, bgr=bgr)[None]
    return _grid(load_resized(source, cfg, bgr=bgr), cfg, crops)


def random_crop(img: Image.Image, cfg: PreprocessConfig, rng: np.random.Generator,
                hflip: bool = True, vflip: bool = True) -> np.ndarray:
    """Training augmentation on a prepared (resized) image: one random crop with random flips."""
    max_x, max_y = img.width - cfg.crop_size, img.height - cfg.crop_size
    x, y = int(rng.integers(0, max_x + 1)), int(rng.integers(0, max_y + 1))
    arr = to_chw_float(img.crop((x, y, x + cfg.crop_size, y + cfg.crop_size)))
    if hflip and rng.random() < 0.5:
        arr = arr[:, :, ::-1]
    if vflip and rng.random() < 0.5:
        arr = arr[:, ::-1, :]
    return np.ascontiguousarray(arr)


def aggregate(crop_scores: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Mean crop score per image, given how many consecutive crops each image contributed."""
    crop_scores = np.asarray(crop_scores, dtype=np.float64).reshape(-1)
    if sum(counts) != crop_scores.size:
        raise ValueError(f"{crop_scores.size} crop scores for {sum(counts)} crops")
    edges = np.cumsum([0, *counts])
    return np.array([crop_scores[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def scan_folder(folder: str | os.PathLike) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """The files under ``folder``, recursively and sorted: (image files by suffix, other files,
    (path, reason) for each folder that could not be listed and each image file listed but not
    reachable). Linked folders are not followed, so a link back up cannot loop."""
    images: list[Path] = []
    others: list[Path] = []
    unreadable: list[tuple[str, str]] = []

    def refused(exc: OSError) -> None:
        unreadable.append((str(exc.filename), f"cannot read folder ({exc.strerror or exc})"))

    for root, _, names in os.walk(folder, onerror=refused):
        for name in names:
            path = Path(root) / name
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except (FileNotFoundError, NotADirectoryError):  # a dangling link, or gone since listed
                continue
            except OSError as exc:  # listed but not reachable (a folder without search permission)
                if is_image_file(path):
                    unreadable.append((str(path), _os_reason(exc)))
                continue
            if regular:
                (images if is_image_file(path) else others).append(path)
    return sorted(images), sorted(others), unreadable


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order (by suffix, see IMAGE_SUFFIXES)."""
    return scan_folder(folder)[0]


def unique_paths(items: Sequence[Any], key: Callable[[str], str] | None = None) -> list[Any]:
    """``items`` without repeats, first spelling kept: paths count as the same file when they are
    after ``os.path.abspath`` (``./a.jpg`` and ``a.jpg``); other items (tuples) when equal.
    ``key`` overrides how a path string is compared (URIs are compared as written)."""
    seen: set[Any] = set()
    out: list[Any] = []
    for item in items:
        ident = (key or os.path.abspath)(item) if isinstance(item, str) else item
        if ident not in seen:
            seen.add(ident)
            out.append(item)
    return out


#: The reason given for a glob that names nothing.
NO_MATCH = "no file or folder matches this pattern"


def expand_local(pattern: str) -> tuple[list[Union[str, tuple[str, str]]], list[str]]:
    """A file, folder or glob -> (what it names in order: a path to read, or (source, reason) for
    what cannot be read; files skipped in folders for their suffix).

    A missing path that is not a glob is kept, so reading it says "file not found"; a file named
    explicitly is always tried, whatever its suffix; a folder gives its image files
    (:func:`scan_folder`). A recursive glob follows linked folders, so the files it reaches
    through a link back up are kept once (by real path). A path the OS refuses to look at (no
    search permission, a name too long) is kept too, so reading it says why; ``""`` is not ".".
    """
    # os.path's tests say False where the OS refuses; Path's raise (Python < 3.12), and Path("") is "."
    is_glob = not os.path.exists(pattern) and any(ch in pattern for ch in "*?[")
    if not is_glob:
        matches = [pattern]
    else:
        real: dict[str, str] = {}  # real path -> the shortest name matched for it
        for match in glob.glob(pattern, recursive=True):
            key = os.path.realpath(match)
            if key not in real or len(match) < len(real[key]):
                real[key] = match
        matches = sorted(real.values())
        if not matches:
            return [(pattern, NO_MATCH)], []
    entries: list[Union[str, tuple[str, str]]] = []
    skipped: list[str] = []
    for match in matches:
        if os.path.isdir(match):
            images, others, unreadable = scan_folder(match)
            if not images and not unreadable:
                log.warning("%s: folder holds no image files", match)
            entries.extend(str(p) for p in images)
            entries.extend(unreadable)
            skipped.extend(str(p) for p in others)
        else:
            entries.append(match)
    return entries, skipped
