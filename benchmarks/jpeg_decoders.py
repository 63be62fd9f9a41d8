"""Which JPEG decoder step 1 of the preprocessing definition could use, measured on this machine.

The definition decodes a large JPEG at a reduced DCT scale through Pillow's ``draft``
(``glia_edge.preprocess``). Large photos make that decode the cost of ``glia-edge score``:
the bench's end-to-end decode-only row. This script times the decoders that are installed on
the same files, at the scale the definition picks. It takes each file once per decoder, in a
rotating order, and reports medians:

- ``pillow``: the definition's own decode;
- ``simplejpeg``: the same libjpeg-turbo decode, written straight into numpy;
- ``pyvips``: libvips shrink-on-load, whole image;
- ``pyvips-rows``: libvips decoding only the band of rows the definition's one centre crop reads
  (approximate: the crop's share of the short side, plus a margin for the bicubic kernel). A
  sequential decode may stop after its last row.

Each decoder's pixels are compared with Pillow's over the rows both decoded.

    python -m glia_edge.benchmarks.jpeg_decoders [FOLDER] [--size 4000x3000 --count 40] [--rounds 5]
"""
from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from glia_edge.preprocess import PreprocessConfig, _draft, find_images  # _draft: the definition's DCT scale

Decoder = Callable[[bytes], np.ndarray]


def _pillow_size(data: bytes, short_side: int) -> tuple[int, int, int]:
    """(width, height) Pillow's ``draft`` decodes to under the definition, and its DCT divisor."""
    with Image.open(io.BytesIO(data)) as img:
        full = img.width
        _draft(img, short_side)
        return img.width, img.height, round(full / img.width)


def decoders(short_side: int, crop_size: int) -> dict[str, tuple[str, Decoder]]:
    """Every decoder installed here: name -> (its library and version, a function giving the uint8
    HxWx3 pixels it decodes)."""
    import PIL.features

    def pillow(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as img:
            _draft(img, short_side)
            img.load()
            return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))

    found: dict[str, tuple[str, Decoder]] = {
        "pillow": (f"Pillow {Image.__version__}, libjpeg-turbo {PIL.features.version('libjpeg_turbo')}", pillow)}
    try:
        import simplejpeg

        def simple(data: bytes) -> np.ndarray:
            width, height, _ = _pillow_size(data, short_side)
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=width, min_height=height)

        found["simplejpeg"] = (f"simplejpeg {simplejpeg.__version__}", simple)
    except ImportError:
        pass
    try:
        import pyvips

        pyvips.cache_set_max(0)

        def vips(data: bytes, rows_only: bool = False) -> np.ndarray:
            _, _, divisor = _pillow_size(data, short_side)
            img = pyvips.Image.jpegload_buffer(data, shrink=divisor, access="sequential")
            if rows_only:  # the centre crop's share of the short side, plus 4 rows each side
                band = math.ceil(min(img.width, img.height) * crop_size / short_side) + 8
                img = img.crop(0, max(0, (img.height - band) // 2), img.width, min(band, img.height))
            return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))

        library = f"pyvips {pyvips.__version__}, libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
        found["pyvips"] = (library, vips)
        found["pyvips-rows"] = (library, lambda data: vips(data, rows_only=True))
    except (ImportError, OSError):  # pyvips without its libvips binary raises OSError
        pass
    return found


def _max_difference(pixels: np.ndarray, reference: np.ndarray, name: str) -> int:
    """Largest |difference| from Pillow's pixels, over the centred rows a row-band decoder kept."""
    if name == "pyvips-rows":
        top = (reference.shape[0] - pixels.shape[0]) // 2
        reference = reference[top:top + pixels.shape[0]]
    if pixels.shape != reference.shape:
        return -1
    return int(np.abs(pixels.astype(np.int16) - reference).max())


def measure(files: list[Path], rounds: int, cfg: PreprocessConfig) -> list[dict[str, object]]:
    """Median and mean ms per file for each decoder; decoders rotate order from file to file."""
    blobs = [path.read_bytes() for path in files]
    found = decoders(cfg.short_side, cfg.crop_size)
    decode = {name: function for name, (_, function) in found.items()}
    names = list(found)
    times: dict[str, list[float]] = {name: [] for name in names}
    differences = {name: 0 for name in names}
    for blob in blobs[:1]:  # warm-up, and the pixels compared
        reference = decode["pillow"](blob)
        for name in names:
            differences[name] = _max_difference(decode[name](blob), reference, name)
    for round_ in range(rounds):
        for index, blob in enumerate(blobs):
            shift = (index + round_) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                decode[name](blob)
                times[name].append((time.perf_counter() - start) * 1000)
    pillow = statistics.median(times["pillow"])
    return [{"decoder": name, "library": found[name][0], "median_ms": statistics.median(times[name]),
             "mean_ms": statistics.mean(times[name]), "vs_pillow": statistics.median(times[name]) / pillow,
             "max_pixel_difference": differences[name], "decodes": len(times[name])} for name in names]


def to_markdown(rows: list[dict[str, object]], machine: str, command: str) -> str:
    lines = [f"machine: {machine}", "", f"command: `{command}`", "",
             "| decoder | library | median ms | mean ms | x Pillow's time | max pixel difference | decodes |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['decoder']} | {row['library']} | {row['median_ms']:.2f} | {row['mean_ms']:.2f} | "
                     f"{row['vs_pillow']:.3f} | {row['max_pixel_difference']} | {row['decodes']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glia_edge.benchmarks.jpeg_decoders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, help="JPEGs to decode (default: generated ones)")
    parser.add_argument("--size", default="4000x3000", help="size of the generated JPEGs")
    parser.add_argument("--count", type=int, default=40, help="files (generated, or at most this many)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the files")
    parser.add_argument("--work", type=Path, default=Path("bench-jpeg-decoders"), help="where generated JPEGs go")
    args = parser.parse_args(argv)
    from glia_edge.benchmarks.endtoend import make_jpegs, parse_size
    from glia_edge.benchmarks.machine import machine_info, machine_line

    try:
        size = parse_size(args.size)
    except ValueError as exc:
        parser.error(f"--size: {exc}")
    if args.folder is not None:
        files = [p for p in find_images(args.folder) if p.suffix.lower() in (".jpg", ".jpeg")][:args.count]
        if not files:
            parser.error(f"{args.folder}: no JPEG files")
    else:
        files = make_jpegs(args.work, size, args.count)
    command = "python -m glia_edge.benchmarks.jpeg_decoders " + " ".join(argv if argv is not None else sys.argv[1:])
    print(to_markdown(measure(files, args.rounds, PreprocessConfig()), machine_line(machine_info()), command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
