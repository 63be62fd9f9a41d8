"""pytest-benchmark suite over the same paths as ``glia-edge bench``: ``pytest benchmarks/ --benchmark-only``.

Tiny by default (``glia_vit_tiny`` cut to 2 blocks, random weights) so it runs in a minute or two;
set ``GLIA_BENCH_PRESET=glia_vit_small`` for the real model (its random-weight checkpoint and
artifacts are written once under pytest's temporary folder). Other knobs: ``GLIA_BENCH_BATCH``
(throughput batch, default 8), ``GLIA_BENCH_CROPS`` (1), ``GLIA_BENCH_THREADS`` (all cores),
``GLIA_BENCH_TARGETS`` (torch,onnx,openvino,trt) and ``GLIA_BENCH_PRECISIONS`` (fp32,fp16,int8,bf16).

The configuration matrix, the exports and the backend options are the runner's own
(:mod:`glia_edge.benchmarks.configs`); TensorRT rows skip with the runner's reason where there is
no GPU. Each configuration is benchmarked at batch 1 (latency) and at the throughput batch;
pytest-benchmark times them one after another, so compare these numbers within one run only and
use ``glia-edge bench`` (alternating round-robin) for the published table.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from glia_edge.benchmarks.artifacts import prepare_artifacts
from glia_edge.benchmarks.configs import BenchConfig, build_matrix, gpu_tensorrt_available, torch_device

PRESET = os.environ.get("GLIA_BENCH_PRESET", "tiny")
BATCH = int(os.environ.get("GLIA_BENCH_BATCH", "8"))
CROPS = int(os.environ.get("GLIA_BENCH_CROPS", "1"))
THREADS = int(os.environ.get("GLIA_BENCH_THREADS", "0")) or len(os.sched_getaffinity(0))
TARGETS = os.environ.get("GLIA_BENCH_TARGETS", "torch,onnx,openvino,trt").split(",")
PRECISIONS = os.environ.get("GLIA_BENCH_PRECISIONS", "fp32,fp16,int8,bf16").split(",")
TINY = {"depth": 2, "adapter_dim": 16, "adapter_heads": 2, "head_hidden": 32, "local_channels": (8, 16, 16, 24)}
CALIB_IMAGES = 32

CONFIGS: list[BenchConfig] = build_matrix(TARGETS, PRECISIONS, gpu_tensorrt=gpu_tensorrt_available())


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"bench-suite-{PRESET}")


@pytest.fixture(scope="session")
def checkpoint(workdir: Path) -> Path:
    """A random-weight checkpoint of the preset (speed only)."""
    import torch

    from glia_edge.checkpoint import checkpoint_meta, save_checkpoint
    from glia_edge.meta import ScoreSpec
    from glia_edge.models import create_model
    from glia_edge.preprocess import PreprocessConfig

    torch.manual_seed(0)
    model = create_model("glia_vit_tiny", **TINY) if PRESET == "tiny" else create_model(PRESET)
    meta = checkpoint_meta(model, ScoreSpec(mean=50.0, std=15.0), PreprocessConfig(),
                           training={"note": "random weights for the pytest-benchmark suite"})
    return save_checkpoint(workdir / f"{PRESET}.safetensors", model, meta)


@pytest.fixture(scope="session")
def artifacts(checkpoint: Path, workdir: Path) -> Any:
    """Every artifact the matrix needs, exported once (INT8 calibrated on built-in photos)."""
    from glia_edge.benchmarks.accuracy import CALIB_PHOTOS, builtin_set

    calib = builtin_set(workdir / "data", "calib", CALIB_PHOTOS, levels=1)
    return prepare_artifacts(checkpoint, CONFIGS, workdir / "artifacts", calib=calib, crops=CROPS, max_batch=BATCH,
                             calib_size=CALIB_IMAGES)


@pytest.fixture(scope="session")
def crops_in() -> dict[int, np.ndarray]:
    """Batch size -> float32 NCHW crops in [0, 1] (random content: speed does not depend on it)."""
    rng = np.random.default_rng(0)
    return {b: rng.random((b * CROPS, 3, 224, 224), dtype=np.float32) for b in sorted({1, BATCH})}


@pytest.fixture(params=CONFIGS, ids=[c.name.replace(" ", "-") for c in CONFIGS])
def backend(request: pytest.FixtureRequest, checkpoint: Path, artifacts: Any) -> Iterator[tuple[BenchConfig, Any]]:
    """(configuration, loaded backend) for each row of the matrix."""
    config: BenchConfig = request.param
    if config.skip:
        pytest.skip(config.skip)
    key = (config.target, config.artifact_precision)
    path = checkpoint if config.target == "torch" else artifacts.paths.get(key)
    if path is None:
        pytest.fail(f"{config.name}: {artifacts.errors.get(key, 'no artifact')}")
    from glia_edge.runtimes import load

    device = torch_device("auto") if config.target == "torch" else "cpu"
    instance = load(path, threads=THREADS, batch_size=BATCH * CROPS, **config.load_options(device))
    yield config, instance
    instance.close()


@pytest.mark.parametrize("batch", sorted({1, BATCH}), ids=lambda b: f"b{b}")
def test_predict_batch(benchmark: Any, backend: tuple[BenchConfig, Any], crops_in: dict[int, np.ndarray],
                       batch: int) -> None:
    """One ``predict_batch`` call on ``batch`` images' crops, after warm-up rounds."""
    config, instance = backend
    benchmark.group = f"batch {batch} ({PRESET}, {CROPS} crop{'s' * (CROPS > 1)}/image)"
    benchmark.extra_info.update(target=config.target, precision=config.precision, images=batch,
                                crops=batch * CROPS, threads=THREADS)
    scores = benchmark.pedantic(instance.predict_batch, args=(crops_in[batch],), rounds=10 if PRESET == "tiny" else 5,
                                warmup_rounds=3, iterations=1)
    assert scores.shape == (batch * CROPS,) and np.isfinite(scores).all()
