"""glia-edge's TensorRT code driven on the CPU through a recording stand-in for ``tensorrt`` and ``cuda``.

The stand-in (``_trt_standin``) implements only those third-party modules' API; everything under
test is glia-edge's own: the probe, ``_profile``, ``_load_timing_cache``, ``onnx_to_engine``, the
backend's per-thread ``_allocate`` / ``_infer`` and ``glia-edge build-engine``. What ran on real
TensorRT: none of it (no GPU with TensorRT here); the GPU tests in test_export_tensorrt.py do that.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

import _trt_standin as standin
from glia_edge.errors import ExportError


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> standin.Settings:
    return standin.install(monkeypatch)


@pytest.fixture
def onnx_meta():
    """The packaged default model's metadata as an FP32 ONNX export would carry it (no training needed)."""
    from glia_edge.formats import read_meta
    from glia_edge.weights import default_checkpoint

    return read_meta(default_checkpoint()).derive(format="onnx", precision="fp32")


def _trt_onnx(folder: Path, meta) -> Path:
    """A TensorRT-ready ONNX as the stand-in's parser sees it (it reads only the path) with its sidecar."""
    from glia_edge.formats import write_sidecar

    path = folder / "model.trt.onnx"
    path.write_bytes(b"onnx graph: the stand-in parser does not read it")
    write_sidecar(path, meta)
    return path


# -- the probe ---------------------------------------------------------------------------------
@pytest.mark.parametrize("change, kind", [
    ({}, None),
    ({"version": "10.0.1"}, "old-tensorrt"),
    ({"devices": 0}, "no-gpu"),
    ({"driver_error": standin.cudaError_t.cudaErrorInsufficientDriver}, "cuda-runtime"),
    ({"builder_fails": True}, "no-builder"),
    ({"fail_call": {"cudaStreamCreate": 1}}, "cuda-runtime"),
])
def test_probe_names_the_kind_of_reason(monkeypatch: pytest.MonkeyPatch, change: dict, kind: str | None) -> None:
    from glia_edge.runtimes.tensorrt import unavailable_error, unavailable_reason

    standin.install(monkeypatch, standin.Settings(**change))
    err = unavailable_error()
    assert (err.kind if err else None) == kind
    standin.install(monkeypatch, standin.Settings(**change))
    assert unavailable_reason() == (str(err) if err else None)
    if kind == "cuda-runtime" and "driver_error" in change:
        assert "cudaErrorInsufficientDriver" in str(err)


def test_probe_without_tensorrt_or_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from glia_edge.runtimes.tensorrt import unavailable_error

    standin.install(monkeypatch)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    assert unavailable_error().kind == "no-cuda-python"
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert unavailable_error().kind == "no-tensorrt"


# -- building ----------------------------------------------------------------------------------
def test_profile_sets_the_batch_range_on_the_input(trt: standin.Settings) -> None:
    from glia_edge.export.tensorrt import EngineOptions, _profile

    builder = standin.Builder(standin.Logger())
    network = builder.create_network(0)
    assert _profile(builder, network, EngineOptions(2, 4, 16)) is not None
    assert trt.named("set_shape") == [("images", (2, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))]
    trt.input_shape = (8, 3, 224, 224)  # a static export: no profile
    assert _profile(builder, builder.create_network(0), EngineOptions(1, 8, 8)) is None


def test_timing_cache_refused_is_logged_and_replaced(trt: standin.Settings, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from glia_edge.export.tensorrt import _load_timing_cache

    config = standin.Builder(standin.Logger()).create_builder_config()
    cache, fresh = _load_timing_cache(config, tmp_path / "none.cache")
    assert fresh and cache.data == b"" and config.cache is cache
    stale = tmp_path / "stale.cache"
    stale.write_bytes(standin.FOREIGN_CACHE)
    with caplog.at_level(logging.WARNING):
        cache, fresh = _load_timing_cache(config, stale)
    assert fresh and cache.data == b"" and config.cache is cache
    assert "refused" in caplog.text
    assert trt.named("set_timing_cache")[1] == (standin.FOREIGN_CACHE, False)  # never ignore_mismatch=True


@pytest.mark.parametrize("precision, typed", [("fp32", False), ("fp16", True), ("int8", True)])
def test_onnx_to_engine_builds_what_the_graph_carries(trt: standin.Settings, tmp_path: Path, onnx_meta,
                                                      precision: str, typed: bool) -> None:
    from dataclasses import replace

    from glia_edge.export.tensorrt import EngineOptions, engine_meta, onnx_to_engine
    from glia_edge.formats import read_sidecar

    trt.graph_precision = precision
    meta = replace(onnx_meta, precision=precision)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(standin.FOREIGN_CACHE)  # from another GPU: refused, then replaced by this one's
    opts = EngineOptions(1, 4, 8, timing_cache=cache)
    engine = onnx_to_engine(_trt_onnx(tmp_path, meta), tmp_path / "model.engine", precision=precision,
                            options=opts, meta=engine_meta(meta, opts))
    assert engine.read_bytes().startswith(standin.ENGINE_MAGIC)  # plain engine bytes, nothing prepended
    strongly = 1 << int(standin.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.named("create_network") == [(strongly if typed else 0,)]
    assert (trt.named("clear_flag") == [(standin.BuilderFlag.TF32,)]) == (precision == "fp32")
    assert cache.read_bytes() == standin.CACHE_MAGIC + b"timings"  # not the stale file written back
    side = read_sidecar(engine)
    assert side.format == "trt" and side.precision == precision
    assert side.export["engine"]["max_batch"] == 8 and side.export["engine"]["timing_cache"] == str(cache)


def test_onnx_to_engine_refuses_a_graph_of_another_precision(trt: standin.Settings, tmp_path: Path,
                                                             onnx_meta) -> None:
    from dataclasses import replace

    from glia_edge.export.tensorrt import onnx_to_engine

    trt.graph_precision = "fp32"
    meta = replace(onnx_meta, precision="fp16")
    with pytest.raises(ExportError, match="the graph is fp32, not fp16"):
        onnx_to_engine(_trt_onnx(tmp_path, meta), tmp_path / "model.engine", precision="fp16", meta=meta)
    assert not (tmp_path / "model.engine").exists() and not (tmp_path / "model.engine.json").exists()


# -- running -----------------------------------------------------------------------------------
@pytest.fixture
def engine(trt: standin.Settings, tmp_path: Path, onnx_meta) -> Path:
    from glia_edge.export.tensorrt import EngineOptions, engine_meta, onnx_to_engine

    opts = EngineOptions(2, 4, 8)
    path = onnx_to_engine(_trt_onnx(tmp_path, onnx_meta), tmp_path / "model.engine", options=opts,
                          meta=engine_meta(onnx_meta, opts))
    trt.calls.clear()
    return path


def _expected(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1).mean(axis=1) * 100.0 + 1.0


def test_backend_allocates_once_and_infers_on_its_stream(trt: standin.Settings, engine: Path) -> None:
    import glia_edge

    trt.devices = 2
    rng = np.random.default_rng(0)
    batch = rng.random((11, 3, 224, 224), dtype=np.float32)
    with glia_edge.load(engine, device="cuda:1") as model:
        assert type(model).__name__ == "TensorRtBackend" and model.batch_size == 8
        got = model.predict_batch(batch)  # two calls: 8 crops, then 3
        got1 = model.predict_batch(batch[:1])  # below the profile's minimum (2): padded, padding dropped
        contexts = trt.count("create_execution_context")
        addresses = trt.named("set_tensor_address")
    np.testing.assert_allclose(got, _expected(batch), rtol=1e-5)
    np.testing.assert_allclose(got1, _expected(batch[:1]), rtol=1e-5)
    assert contexts == 1 and len(addresses) == 2  # input and output address set once, at allocation
    shapes = [args[1] for args in trt.named("set_input_shape")]
    assert shapes == [(8, 3, 224, 224), (8, 3, 224, 224), (3, 3, 224, 224), (2, 3, 224, 224)]
    executes = trt.named("execute_async_v3")
    syncs = trt.named("cudaStreamSynchronize")
    assert len(executes) == len(syncs) == 3 and {s for _, s in executes} == {s for (s,) in syncs}
    assert set(trt.named("cudaSetDevice")) == {(1,)}  # the device asked for, on every call
    assert not trt.live  # close() freed every buffer and stream


def test_each_thread_gets_its_own_context_stream_and_buffers(trt: standin.Settings, engine: Path) -> None:
    """Threads share one backend; calls overlap (two in flight at once) and match the serial results."""
    import glia_edge

    trt.infer_delay_s = 0.05
    rng = np.random.default_rng(1)
    batches = [rng.random((4, 3, 224, 224), dtype=np.float32) for _ in range(4)]
    model = glia_edge.load(engine)
    serial = [model.predict_batch(b) for b in batches]
    results: dict[int, list[np.ndarray]] = {}
    barrier = threading.Barrier(len(batches))

    def work(i: int) -> None:
        barrier.wait()
        results[i] = [model.predict_batch(batches[i]) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, batch in enumerate(batches):
        for got in results[i]:
            np.testing.assert_array_equal(got, serial[i])
    assert trt.max_in_flight >= 2  # concurrency, not a global lock
    assert model.thread_states == 1 + len(batches)
    by_context: dict[int, set[int]] = {}
    for _, args, thread in (c for c in trt.calls if c[0] == "execute_async_v3"):
        by_context.setdefault(args[0], set()).add(thread)
    assert len(by_context) == 1 + len(batches) and all(len(t) == 1 for t in by_context.values())
    set_device_threads = {thread for name, _, thread in trt.calls if name == "cudaSetDevice"}
    assert {thread for ts in by_context.values() for thread in ts} <= set_device_threads
    model.close()
    assert not trt.live
    with pytest.raises(RuntimeError, match="closed"):
        model.predict_batch(batches[0])


@pytest.mark.parametrize("fail", ["cudaMalloc", "cudaMallocHost", "cudaStreamCreate"])
def test_buffers_are_freed_when_construction_fails_midway(trt: standin.Settings, engine: Path, fail: str) -> None:
    import glia_edge

    trt.fail_call = {fail: 2}  # the probe's stream is the first cudaStreamCreate
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        glia_edge.load(engine)
    assert not trt.live  # every pinned/device buffer and stream made before the failure was freed
