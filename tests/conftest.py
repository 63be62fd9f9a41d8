"""Shared fixtures: small real photos at graded blur levels, and a tiny GLIA checkpoint fitted to them.

The checkpoint is ``glia_vit_tiny`` cut to 2 blocks with narrow adapters, fitted for a few dozen
steps so its scores fall with blur: parity and rank-correlation tests then measure something real
(a random head's scores are nearly constant, which makes Spearman meaningless).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

BLUR_LEVELS = (0.0, 1.0, 2.0, 3.5, 5.0)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
TINY_MODEL = {"depth": 2, "adapter_dim": 16, "adapter_heads": 2, "head_hidden": 32, "local_channels": (8, 16, 16, 24)}


def _photo(name: str, size: tuple[int, int] = (320, 256)) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def blurred(img: Image.Image, sigma: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(sigma)) if sigma else img.copy()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 photos x 5 blur levels as small JPEGs: ``{photo}_b{level}.jpg`` (level 0 is sharp)."""
    root = tmp_path_factory.mktemp("images")
    for name in PHOTOS:
        photo = _photo(name)
        for level, sigma in enumerate(BLUR_LEVELS):
            blurred(photo, sigma).save(root / f"{name}_b{level}.jpg", quality=95)
    return root


def image_level(path: Path) -> int:
    return int(path.stem.rsplit("_b", 1)[1])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> Path:
    """A tiny GLIA checkpoint whose scores fall as blur rises (fitted in a few seconds on the CPU)."""
    import torch

    from glia_edge.checkpoint import checkpoint_meta, save_checkpoint
    from glia_edge.meta import ScoreSpec
    from glia_edge.models import create_model
    from glia_edge.preprocess import PreprocessConfig, load_image, prepare, random_crop

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = PreprocessConfig(short_side=256, crop_size=224)
    model = create_model("glia_vit_tiny", **TINY_MODEL)
    paths = sorted(image_dir.glob("*.jpg"))
    images = [prepare(load_image(p), cfg) for p in paths]
    target = torch.tensor([1.0 - image_level(p) / 2.0 for p in paths])  # standardised: sharp high
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(40):
        idx = rng.choice(len(paths), 8, replace=False)
        x = torch.from_numpy(np.stack([random_crop(images[i], cfg, rng) for i in idx]))
        loss = torch.nn.functional.mse_loss(model.forward_standardised(x), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.set_score_scale(50.0, 15.0)
    score = ScoreSpec(name="MOS", min=0.0, max=100.0, mean=50.0, std=15.0)
    meta = checkpoint_meta(model, score, cfg, training={"dataset": "test-blur", "steps": 40})
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, meta)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any export that gets as far as loading the checkpoint fails the test."""
    from glia_edge.export import exporter

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export started before its arguments were checked")

    monkeypatch.setattr(exporter, "load_source", refuse)


# -- GLIA_REQUIRE_TENSORRT=1: a TensorRT skip is a failure (for a GPU CI) ------------------------
@functools.lru_cache(maxsize=1)
def _tensorrt_reason() -> str | None:
    from glia_edge.runtimes.tensorrt import unavailable_reason

    return unavailable_reason()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With ``GLIA_REQUIRE_TENSORRT=1``, a test that skips for want of TensorRT (marked ``gpu``, or
    skipped with the TensorRT probe's reason) fails with that reason, so a broken install on a GPU
    machine cannot pass as green skips. Skips that say TensorRT *is* present are left alone."""
    import os

    outcome = yield
    report = outcome.get_result()
    if os.environ.get("GLIA_REQUIRE_TENSORRT") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    probe = _tensorrt_reason()
    if item.get_closest_marker("gpu") is not None or (probe is not None and probe in reason):
        report.outcome = "failed"
        report.longrepr = f"GLIA_REQUIRE_TENSORRT=1 but this TensorRT test skipped: {reason}"
