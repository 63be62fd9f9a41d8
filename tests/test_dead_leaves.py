"""Generated dead-leaves images: deterministic, scale-invariant-looking pristine content for training."""
from __future__ import annotations

import numpy as np
import pytest

from glia_edge.dead_leaves import dead_leaves, dead_leaves_named, is_dead_leaves
from glia_edge.distortions import reference_images
from glia_edge.errors import DatasetError

SMALL = (160, 120)


def test_an_index_gives_the_same_image_everywhere_and_indices_differ() -> None:
    a, b, c = dead_leaves(3, SMALL), dead_leaves(3, SMALL), dead_leaves(4, SMALL)
    assert a.mode == "RGB" and a.size == SMALL
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_edges_are_anti_aliased_and_content_spans_scales() -> None:
    img = np.asarray(dead_leaves(0, SMALL).convert("L"), dtype=np.float64)
    # Supersampling leaves in-between values on disk edges: many distinct grey levels, not a few flat colours.
    assert len(np.unique(img)) > 100
    # Power falls with frequency roughly as natural photos' 1/f^2 (slope between -3 and -1 in log-log).
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    h, w = img.shape
    yy, xx = np.indices(spectrum.shape)
    radius = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    radial = np.bincount(radius.ravel(), spectrum.ravel()) / np.maximum(np.bincount(radius.ravel()), 1)
    f = np.arange(4, min(h, w) // 2)
    slope = np.polyfit(np.log(f), np.log(radial[f]), 1)[0]
    assert -3.0 < slope < -1.0, slope


def test_names_and_reference_images() -> None:
    assert is_dead_leaves("dead_leaves_12") and not is_dead_leaves("dead_leaves_x") and not is_dead_leaves("coins")
    with pytest.raises(ValueError, match="not a dead-leaves name"):
        dead_leaves_named("leaves_1")
    with pytest.raises(ValueError, match=">= 0"):
        dead_leaves(-1)
    refs = reference_images(names=["dead_leaves_0"], grey_copies=True)
    # One colour reference (short side 384) and its grey copy, both of the dead_leaves_0 group.
    assert [(r.ref, r.part) for r in refs] == [("dead_leaves_0", 0), ("dead_leaves_0", 1)]
    assert min(refs[0].image.size) == 384
    with pytest.raises(DatasetError, match="dead_leaves_<k>"):
        reference_images(names=["no_such_photo"])
