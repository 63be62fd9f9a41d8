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
    ({"driver_error": standin.cudaError_t.cudaErrorInsufficientDriver}, "cuda-driver"),
    ({"driver_error": standin.cudaError_t.cudaErrorNoDevice}, "no-gpu"),
    ({"builder_fails": True}, "no-builder"),
    ({"runtime_fails": True}, "no-runtime"),
    ({"fail_call": {"cudaStreamCreate": 1}}, "cuda-runtime"),
])
def test_probe_names_the_kind_of_reason(monkeypatch: pytest.MonkeyPatch, change: dict, kind: str | None) -> None:
    from glia_edge.runtimes.tensorrt import REASON_KINDS, unavailable_error, unavailable_reason

    standin.install(monkeypatch, standin.Settings(**change))
    err = unavailable_error()
    assert (err.kind if err else None) == kind and (kind is None or kind in REASON_KINDS)
    standin.install(monkeypatch, standin.Settings(**change))
    assert unavailable_reason() == (str(err) if err else None)
    driver = change.get("driver_error")
    if driver == standin.cudaError_t.cudaErrorInsufficientDriver:  # the driver hint, with Jetson's CUDA minor
        assert "cudaErrorInsufficientDriver" in str(err) and "JetPack's CUDA minor" in str(err)
        assert "cuda-python 12.6" in str(err)
    if driver == standin.cudaError_t.cudaErrorNoDevice:  # e.g. a container without the GPU: no driver hint
        assert "cudaErrorNoDevice" in str(err) and "no CUDA GPU is visible" in str(err)
        assert "driver" not in str(err).replace("cudaErrorNoDevice", "")
    if kind == "old-tensorrt":
        assert "JetPack 6.1" in str(err)


def test_the_run_probe_needs_no_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime-only install (no builder resource) runs engines: only the build probe needs a builder."""
    from glia_edge.runtimes.tensorrt import unavailable_error

    trt = standin.install(monkeypatch, standin.Settings(builder_fails=True))
    assert unavailable_error(build=False) is None and trt.count("Builder") == 0 and trt.count("Runtime") == 1
    assert unavailable_error().kind == "no-builder"
    ok = standin.install(monkeypatch)
    assert unavailable_error() is None and ok.count("Builder") == 1
    assert unavailable_error() is None and ok.count("Builder") == 2  # a probe's answer keeps no builder


def test_the_install_hint_names_pypi_and_jetpack(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from glia_edge.runtimes.tensorrt import unavailable_error

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    err = unavailable_error()
    assert err.kind == "no-tensorrt" and "not PyPI" not in str(err)
    assert "on PyPI" in str(err) and "JetPack 6.1+" in str(err) and "glia-edge[jetson]" in str(err)


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
    with pytest.raises(ExportError, match="fixed batch of 8.*outside the batch range asked \\(1..4\\)"):
        _profile(builder, builder.create_network(0), EngineOptions(1, 2, 4))


def test_the_standin_refuses_what_tensorrt_refuses(trt: standin.Settings) -> None:
    """No profile for a dynamic input, a bad profile, a damaged cache, a size that is no size_t."""
    builder = standin.Builder(standin.Logger())
    network, config = builder.create_network(0), builder.create_builder_config()
    assert builder.build_serialized_network(network, config) is None  # dynamic batch, no profile
    for shapes in [((4, 3, 224, 224), (2, 3, 224, 224), (8, 3, 224, 224)),  # min > opt
                   ((1, 3, 224, 224), (2, 3, 224, 224), (8, 3, 256, 256))]:  # a fixed dimension changed
        profile, config = builder.create_optimization_profile(), builder.create_builder_config()
        profile.set_shape("images", *shapes)
        config.add_optimization_profile(profile)
        assert builder.build_serialized_network(network, config) is None
    assert config.create_timing_cache(b"not a timing cache") is None
    with pytest.raises(TypeError):
        config.set_timing_cache(None, False)
    with pytest.raises(TypeError):
        config.set_memory_pool_limit(standin.MemoryPoolType.WORKSPACE, 1 << 64)
    trt.parse_errors = ("bad node",)
    parser = standin.OnnxParser(network, standin.Logger())
    assert not parser.parse_from_file("m.onnx") and parser.num_errors == 1 and "bad node" in str(parser.get_error(0))


def test_enum_values_are_tensorrt_10_3s() -> None:
    assert int(standin.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(standin.BuilderFlag.TF32) == 6 and int(standin.ProfilingVerbosity.DETAILED) == 2
    assert (int(standin.LayerType.QUANTIZE), int(standin.LayerType.DEQUANTIZE), int(standin.LayerType.CAST)) == (32, 33, 1)


def test_timing_cache_refused_is_logged_and_replaced(trt: standin.Settings, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from glia_edge.export.tensorrt import _load_timing_cache

    config = standin.Builder(standin.Logger()).create_builder_config()
    cache, fresh = _load_timing_cache(config, tmp_path / "none.cache")
    assert fresh and cache.data == standin.CACHE_MAGIC and config.cache is cache
    stale = tmp_path / "stale.cache"
    stale.write_bytes(standin.FOREIGN_CACHE)
    with caplog.at_level(logging.WARNING):
        cache, fresh = _load_timing_cache(config, stale)
    assert fresh and cache.data == standin.CACHE_MAGIC and config.cache is cache
    assert "refused" in caplog.text
    assert trt.named("set_timing_cache")[1] == (standin.FOREIGN_CACHE, False)  # never ignore_mismatch=True


@pytest.mark.parametrize("content, says", [
    (b"\x00garbage, not a timing cache", "cannot be read"),  # create_timing_cache gives None
    (standin.OTHER_VERSION_CACHE, "kept no timings"),  # read, but its timings dropped
])
def test_timing_cache_unreadable_or_ignored_is_not_called_loaded(trt: standin.Settings, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  content: bytes, says: str) -> None:
    from glia_edge.export.tensorrt import _load_timing_cache

    config = standin.Builder(standin.Logger()).create_builder_config()
    path = tmp_path / "timing.cache"
    path.write_bytes(content)
    with caplog.at_level(logging.INFO):
        cache, fresh = _load_timing_cache(config, path)
    assert fresh and cache is not None and config.cache is cache
    assert says in caplog.text and "bytes read" not in caplog.text
    good = tmp_path / "good.cache"
    good.write_bytes(standin.CACHE_MAGIC + b"timings")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cache, fresh = _load_timing_cache(config, good)
    assert not fresh and "bytes of timings taken" in caplog.text


@pytest.mark.parametrize("workspace", [float("inf"), float("nan"), 1e30, 0.0, -1.0, "4"])
def test_engine_options_need_a_finite_size_t_workspace(workspace: object) -> None:
    from glia_edge.export.tensorrt import EngineOptions

    with pytest.raises(ValueError, match="workspace_gib must be"):
        EngineOptions(workspace_gib=workspace)


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
    strongly = 1 << 1  # NetworkDefinitionCreationFlag.STRONGLY_TYPED is 1 in TensorRT 10
    assert trt.named("create_network") == [(strongly if typed else 0,)]
    assert (trt.named("clear_flag") == [(standin.BuilderFlag.TF32,)]) == (precision == "fp32")
    assert cache.read_bytes() == standin.CACHE_MAGIC + b"timings"  # not the stale file written back
    side = read_sidecar(engine)
    assert side.format == "trt" and side.precision == precision
    assert side.export["engine"]["max_batch"] == 8 and side.export["engine"]["timing_cache"] == str(cache)
    assert trt.count("Builder") == 1 and len(trt.loggers()) == 1  # one builder (probe and build), one logger
    from glia_edge.runtimes import tensorrt as rt

    assert rt._BUILDER is None  # not kept after the build


def test_onnx_to_engine_reports_parser_errors(trt: standin.Settings, tmp_path: Path, onnx_meta) -> None:
    from glia_edge.export.tensorrt import onnx_to_engine

    trt.parse_errors = ("Unsupported operator FancyOp", "second error")
    with pytest.raises(ExportError, match="parser failed: .*Unsupported operator FancyOp.* \\| .*second error"):
        onnx_to_engine(_trt_onnx(tmp_path, onnx_meta), tmp_path / "model.engine", meta=onnx_meta)
    assert not (tmp_path / "model.engine").exists()


def test_a_fixed_batch_onnx_records_its_batch(trt: standin.Settings, tmp_path: Path, onnx_meta) -> None:
    import glia_edge
    from glia_edge.export.tensorrt import EngineOptions, engine_meta, onnx_to_engine
    from glia_edge.formats import read_sidecar

    trt.input_shape = (8, 3, 224, 224)
    opts = EngineOptions(1, 8, 32)  # the defaults: a range around the fixed batch
    engine = onnx_to_engine(_trt_onnx(tmp_path, onnx_meta), tmp_path / "model.engine", options=opts,
                            meta=engine_meta(onnx_meta, opts))
    settings = read_sidecar(engine).export["engine"]
    assert (settings["min_batch"], settings["opt_batch"], settings["max_batch"]) == (8, 8, 8)
    with glia_edge.load(engine) as model:
        assert model.batch_size == 8
    with pytest.raises(ExportError, match="fixed batch of 8"):
        onnx_to_engine(tmp_path / "model.trt.onnx", tmp_path / "other.engine", options=EngineOptions(1, 2, 4))
    assert not (tmp_path / "other.engine").exists()


def test_a_bad_profile_fails_the_build_not_later(trt: standin.Settings, tmp_path: Path, onnx_meta,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export import tensorrt as export_trt

    monkeypatch.setattr(export_trt, "_profile", lambda builder, network, opts: None)  # a dynamic input, no profile
    with pytest.raises(ExportError, match="failed to build"):
        export_trt.onnx_to_engine(_trt_onnx(tmp_path, onnx_meta), tmp_path / "model.engine")
    assert "no optimization profile" in trt.named("build_error")[0][0]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_layer_precisions_from_a_detailed_engine(trt: standin.Settings, tmp_path: Path, onnx_meta,
                                                 precision: str) -> None:
    from dataclasses import replace

    from glia_edge.export.tensorrt import layer_precisions, onnx_to_engine

    trt.graph_precision = precision
    meta = replace(onnx_meta, precision=precision)
    plain = onnx_to_engine(_trt_onnx(tmp_path, meta), tmp_path / "plain.engine", precision=precision)
    assert layer_precisions(plain) is None  # built without DETAILED: the inspector has only names
    detailed = onnx_to_engine(tmp_path / "model.trt.onnx", tmp_path / "detailed.engine", precision=precision,
                              detailed=True)
    counts = layer_precisions(detailed)
    assert counts == ({"fp32": 1, "fp16": 2} if precision == "fp16" else {"fp32": 2, "int8": 1, "fp16": 1})
    assert trt.count("Builder") == 2  # one per build, none to inspect




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
    assert trt.count("Builder") == 0 and len(trt.loggers()) == 1  # a load creates no builder; one logger
    assert model.engine is None and model._runtime is None


def test_an_fp16_io_engine_runs_on_a_runtime_only_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          onnx_meta) -> None:
    """FP16 input and output tensors (host buffers in float16); no builder where it runs."""
    import glia_edge
    from glia_edge.export.tensorrt import EngineOptions, engine_meta, onnx_to_engine

    standin.install(monkeypatch, standin.Settings(io_dtype="float16"))
    opts = EngineOptions(1, 4, 8)
    engine = onnx_to_engine(_trt_onnx(tmp_path, onnx_meta), tmp_path / "model.engine", options=opts,
                            meta=engine_meta(onnx_meta, opts))
    trt = standin.install(monkeypatch, standin.Settings(io_dtype="float16", builder_fails=True))
    batch = np.random.default_rng(2).random((5, 3, 224, 224), dtype=np.float32)
    with glia_edge.load(engine) as model:
        got = model.predict_batch(batch)
        assert model._in_dtype == np.float16 and model._out_dtype == np.float16
    assert trt.count("Builder") == 0
    np.testing.assert_allclose(got, _expected(batch.astype(np.float16).astype(np.float32)), rtol=2e-3)


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

    trt.fail_call = {fail: 2}  # the probe's stream is the first cudaStreamCreate (the engine was built before)
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        glia_edge.load(engine)
    assert not trt.live  # every pinned/device buffer and stream made before the failure was freed


def test_profile_names_the_trtexec_command_for_an_engine(trt: standin.Settings, engine: Path) -> None:
    from glia_edge.benchmarks.profile import profile_artifact

    with pytest.raises(ValueError) as err:
        profile_artifact(engine, batch=8)
    assert f"trtexec --loadEngine={engine} --shapes=images:8x3x224x224 --dumpProfile --separateProfileRun" \
        in str(err.value)  # a dynamic-batch engine needs a shape


def test_tensorrt_rows_are_timed_end_to_end() -> None:
    from glia_edge.benchmarks import timing

    timer, kind = timing.timer_for("trt", "cpu")
    assert timer is timing.wall_timer and kind == "wall"
