"""Tiny fake IQA dataset trees with the real sets' exact file names and columns, and tiny models.

Each ``make_*`` writes a miniature of a release as it is downloaded (folders, annotation file
names, column names, MATLAB variable names, Excel sheet headers), with small images, so the
loaders are tested against the real layouts without the real data.
"""
from __future__ import annotations

import pytest

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

#: A GLIA small enough to train for a few steps in a test: 64x64 crops, 2 blocks, narrow adapters.
TINY_OVERRIDES = {"depth": 2, "adapter_dim": 16, "adapter_heads": 2, "head_hidden": 32,
                  "local_channels": (8, 16, 16, 24), "img_size": 64}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def texture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small RGB image with structure (smoothed noise), different per seed."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1] // 4 + 1, size[0] // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC)


def photo(name: str, size: tuple[int, int] = (96, 80)) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def write_images(folder: Path, names: Sequence[str], size: tuple[int, int] = (64, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        texture(i, size).save(folder / name)


def make_koniq(root: Path, n: int = 20, with_sets: bool = True) -> Path:
    """``1024x768/`` + the sets CSV (MOS 0-100, ``set``) or the download's scores CSV (MOS 1-5)."""
    names = [f"{1000000 + i * 7919}.jpg" for i in range(n)]
    write_images(root / "1024x768", names)
    rng = np.random.default_rng(1)
    counts = ["c1", "c2", "c3", "c4", "c5", "c_total"]
    if with_sets:
        header = ["image_name", *counts, "MOS", "SD", "set"]
        subsets = ["training"] * (n - 6) + ["validation"] * 2 + ["test"] * 4
        rows = [[nm, 1, 2, 30, 60, 7, 100, f"{rng.uniform(4, 88):.4f}", "0.6", s] for nm, s in zip(names, subsets)]
        path = root / "koniq10k_distributions_sets.csv"
    else:
        header = ["image_name", *counts, "MOS", "SD", "MOS_zscore"]
        rows = [[nm, 1, 2, 30, 60, 7, 100, f"{rng.uniform(1.1, 4.3):.4f}", "0.6", "55.1"] for nm in names]
        path = root / "koniq10k_scores_and_distributions.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)  # the release quotes its header
        writer.writerow(header)
        writer.writerows(rows)
    return root


def make_livec(root: Path, n: int = 12) -> Path:
    """``Images/`` (+ ``trainingImages/``) and ``Data/AllImages_release.mat``, ``Data/AllMOS_release.mat``."""
    import scipy.io

    training = [f"t{i}.bmp" for i in range(1, 8)]
    names = training + [f"{10 + i}.JPG" for i in range(n)]
    write_images(root / "Images" / "trainingImages", training)
    write_images(root / "Images", names[7:])
    cells = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = np.array([name])
    mos = np.random.default_rng(2).uniform(5, 95, (1, len(names)))
    (root / "Data").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    return root


def make_spaq(root: Path, n: int = 6, size: tuple[int, int] = (480, 400)) -> Path:
    """``TestImage/`` of larger photos + ``Annotations/MOS and Image attribute scores.xlsx``."""
    import pandas as pd

    names = [f"{i:05d}.jpg" for i in range(1, n + 1)]
    write_images(root / "TestImage", names, size)
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"Image name": names, "MOS": rng.uniform(10, 90, n).round(2),
                          **{k: rng.uniform(0, 100, n).round(2) for k in
                             ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")}})
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    table.to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    pd.DataFrame({"Image name": names, "Scene": 1}).to_excel(root / "Annotations" / "Scene category labels.xlsx",
                                                             index=False)
    return root


def make_kadid(root: Path, refs: int = 6, types: int = 2, levels: int = 2) -> Path:
    """``images/`` (references ``I01.png`` and ``I01_01_01.png`` ...) + ``dmos.csv``."""
    rows = []
    rng = np.random.default_rng(4)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for r in range(1, refs + 1):
        ref = f"I{r:02d}.png"
        texture(r).save(root / "images" / ref)
        for t in range(1, types + 1):
            for lv in range(1, levels + 1):
                dist = f"I{r:02d}_{t:02d}_{lv:02d}.png"
                texture(r).filter(ImageFilter.GaussianBlur(lv)).save(root / "images" / dist)
                rows.append([dist, ref, f"{rng.uniform(1, 5):.3f}", "0.5"])
    with open(root / "dmos.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["dist_img", "ref_img", "dmos", "var"])
        writer.writerows(rows)
    return root


def make_blur_set(root: Path, photos: Sequence[str] = PHOTOS, levels: Sequence[float] = (0, 1.5, 3, 5),
                  size: tuple[int, int] = (96, 80)) -> Path:
    """A synthetic-distortion-style set: ``labels.csv`` with ``path,score,ref,distortion,level``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for name in photos:
        base = photo(name, size)
        for level, sigma in enumerate(levels):
            rel = f"images/{name}-blur-{level}.png"
            (base.filter(ImageFilter.GaussianBlur(sigma)) if sigma else base).save(root / rel)
            rows.append({"path": rel, "score": 100 - 20 * level, "ref": name, "distortion": "blur", "level": level})
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "score", "ref", "distortion", "level"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own glia-edge cache (``GLIA_EDGE_CACHE``): training tests write into it."""
    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def blur_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 photos x 4 blur levels at 96x80, score 100/80/60/40 (synthetic-set layout)."""
    return make_blur_set(tmp_path_factory.mktemp("blur"))
