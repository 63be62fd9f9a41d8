"""Dead-leaves images: generated pristine content with natural-image statistics.

The dead-leaves model (Matheron; Lee, Mumford and Huang 2001) stacks opaque disks whose radii follow
``p(r) ~ r^-3``: the result is scale invariant, with a power spectrum close to natural photos' ``1/f^2``,
sharp occlusion edges at every scale and flat regions between them. It is a standard target for
measuring texture loss in cameras (IEEE 1858, ISO 19567-2). Here it widens the pristine content a
model trains on beyond the few photos that install with the dependencies, so that "sharp, clean"
is not learned as "looks like one of these photos".

Each image depends only on its index: ``dead_leaves(k)`` is the same on every machine.
"""
from __future__ import annotations

import colorsys
import re

import numpy as np
from PIL import Image, ImageDraw

#: Photo names that :func:`glia_edge.distortions.reference_images` generates: ``dead_leaves_<k>``.
NAME = re.compile(r"^dead_leaves_(\d+)$")
#: Seed of the generator family (the index ``k`` picks the image within it).
SEED = 1858
#: Rendered at this factor and box-averaged down, so disk edges are anti-aliased (not pixel steps,
#: which a model could take for pixelation).
SUPERSAMPLE = 4


def is_dead_leaves(name: str) -> bool:
    return NAME.match(name) is not None


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # Muted colours as in photos: moderate saturation, value spread over the range.
    h, s, v = rng.random(), 0.75 * rng.beta(1.5, 3.0), 0.08 + 0.9 * rng.beta(2.0, 2.0)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def dead_leaves(k: int, size: tuple[int, int] = (512, 384), *, r_min: float = 1.5, r_max: float = 160.0,
                coverage: float = 6.0) -> Image.Image:
    """The ``k``-th dead-leaves image (RGB, ``size`` = (width, height)).

    Disk radii (in output pixels) follow ``r^-3`` on [``r_min``, ``r_max``]; disks are drawn until
    their summed area is ``coverage`` times the image, so almost every pixel is covered by several
    and the last one drawn shows (the front leaf).
    """
    if k < 0:
        raise ValueError(f"dead-leaves index must be >= 0, got {k}")
    rng = np.random.default_rng([SEED, k])
    w, h = size
    s = SUPERSAMPLE
    canvas = Image.new("RGB", (w * s, h * s), _colour(rng))
    draw = ImageDraw.Draw(canvas)
    a, b = r_min ** -2, r_max ** -2
    covered, target = 0.0, coverage * w * h
    while covered < target:
        # Inverse CDF of p(r) ~ r^-3 on [r_min, r_max].
        r = (a - rng.random() * (a - b)) ** -0.5
        x, y = rng.uniform(-r, w + r), rng.uniform(-r, h + r)
        draw.ellipse([(x - r) * s, (y - r) * s, (x + r) * s, (y + r) * s], fill=_colour(rng))
        covered += np.pi * r * r
    return canvas.reduce(s)


def dead_leaves_named(name: str) -> Image.Image:
    """The image of a ``dead_leaves_<k>`` name."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a dead-leaves name (dead_leaves_<k>)")
    return dead_leaves(int(match.group(1)))
