"""The runtime contract, after NNCF's template tests: one class of tests that every backend passes.

Each backend's subclass only says how to build its artifact (and with which load options):
PyTorch checkpoint, ONNX Runtime, OpenVINO ``.xml`` pinned to f32, an OpenVINO IR folder, OpenVINO
running the ONNX model (how the packaged model runs on an OpenVINO-only install), and a TensorRT
engine (skipped with a reason where there is no GPU or TensorRT). Every backend is shared by
threads: results equal the serial ones and at least two runtime calls are in flight at once. FP32 artifacts must
match the PyTorch reference within 1e-4 of the score range. The ONNX Runtime and OpenVINO options
(threads, precision pinning, BF16, throughput mode) are tested at the end.
"""
from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

import glia_edge
from glia_edge.errors import BackendUnavailableError, GliaError, ImageLoadError
from glia_edge.meta import sha256_file
from glia_edge.runtimes import read_meta
from glia_edge.formats import read_sidecar, sidecar_path

from _runtimes_fixtures import STATIC_BATCH, exported

FP32_TOL = 1e-4  # of the score range
SUBSET = 3  # images used for the 5- and 9-crop and batch-1 checks


def _tensorrt_skip_reason() -> str | None:
    from glia_edge.export import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()  # the one probe: TensorRT, cuda-python, driver, GPU, builder


TRT_SKIP = _tensorrt_skip_reason()


@pytest.fixture(scope="module")
def images(image_dir: Path) -> list[Path]:
    return sorted(image_dir.glob("*.jpg"))


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path, images: list[Path]) -> dict[int, np.ndarray]:
    """PyTorch scores: every image with 1 crop, the first SUBSET images with 5 and 9 crops."""
    with glia_edge.load(tiny_checkpoint) as ref:
        out = {1: ref.predict(images)}
        out.update({n: ref.predict(images[:SUBSET], crops=n) for n in (5, 9)})
    return out


def corrupt_copy(src: Path, dest: Path) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) // 3])
    return dest


class InFlight:
    """Counts calls in flight through wrapped runtime calls; the first callers wait (up to
    ``timeout`` s) for a second one to enter, so overlap is proven, not left to luck. A backend that
    serialises its runtime calls never reaches two: the first caller's wait times out, peak stays 1."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.cond = threading.Condition()
        self.now = self.peak = self.calls = 0
        self.timeout = timeout

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.cond:
                self.now += 1
                self.calls += 1
                self.peak = max(self.peak, self.now)
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.peak >= 2, timeout=self.timeout)
            try:
                return fn(*args, **kwargs)
            finally:
                with self.cond:
                    self.now -= 1
        return counted


class Proxy:
    """Delegates every attribute to ``target`` except the ones given."""

    def __init__(self, target: Any, **overrides: Any) -> None:
        self._target = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class RuntimeContract:
    """What every backend guarantees. Subclasses set the class attributes and ``build``."""

    backend: ClassVar[str]  # class name glia_edge.load must pick
    fmt: ClassVar[str]  # ArtifactMeta.format of the artifact
    options: ClassVar[dict[str, Any]] = {}
    has_static: ClassVar[bool] = True

    def build(self, checkpoint: Path, static: bool) -> Path:
        raise NotImplementedError

    @contextmanager
    def instrument(self, model: Any, inflight: InFlight) -> Iterator[None]:
        """Route the backend's innermost runtime call through ``inflight.wrap`` while the block runs.

        This default wraps ``_infer``; a backend whose runtime call lies deeper overrides it, so a
        lock inside ``_infer`` would show as calls that never overlap."""
        model._infer = inflight.wrap(model._infer)
        try:
            yield
        finally:
            del model._infer

    @pytest.fixture(scope="class")
    def artifact(self, tiny_checkpoint: Path) -> Path:
        return self.build(tiny_checkpoint, static=False)

    @pytest.fixture(scope="class")
    def model(self, artifact: Path) -> Any:
        with glia_edge.load(artifact, **self.options) as model:
            yield model

    def tol(self, model: Any) -> float:
        return FP32_TOL * model.meta.score_spec.range

    def test_load_picks_the_backend(self, model: Any) -> None:
        assert type(model).__name__ == self.backend
        assert model.meta.format == self.fmt and model.meta.precision == "fp32"

    def test_scores_match_reference_with_a_partial_last_batch(self, model: Any, images: list[Path],
                                                              reference: dict[int, np.ndarray]) -> None:
        assert model.batch_size == 8 and len(images) % model.batch_size != 0  # 20 = 8 + 8 + 4
        scores = model.predict(images)
        assert scores.shape == (len(images),) and scores.dtype == np.float64
        np.testing.assert_allclose(scores, reference[1], rtol=0, atol=self.tol(model))

    def test_batch_of_one(self, artifact: Path, images: list[Path], reference: dict[int, np.ndarray]) -> None:
        with glia_edge.load(artifact, batch_size=1, **self.options) as model:
            np.testing.assert_allclose(model.predict(images[:SUBSET]), reference[1][:SUBSET], rtol=0,
                                       atol=self.tol(model))

    @pytest.mark.parametrize("crops", [5, 9])
    def test_crop_grids(self, model: Any, images: list[Path], reference: dict[int, np.ndarray], crops: int) -> None:
        results = list(model.iter_scores(images[:SUBSET], crops=crops))
        assert [r.crops for r in results] == [crops] * SUBSET
        np.testing.assert_allclose([r.score for r in results], reference[crops], rtol=0, atol=self.tol(model))

    def test_fixed_batch_artifact_pads(self, tiny_checkpoint: Path, images: list[Path],
                                       reference: dict[int, np.ndarray]) -> None:
        if not self.has_static:
            pytest.skip(f"{self.backend} artifacts have no fixed batch")
        with glia_edge.load(self.build(tiny_checkpoint, static=True), **self.options) as model:
            assert model.fixed_batch == model.batch_size == STATIC_BATCH
            n = STATIC_BATCH + 2  # one full batch, then one padded with zeros
            np.testing.assert_allclose(model.predict(images[:n]), reference[1][:n], rtol=0, atol=self.tol(model))
            assert model.predict_batch(model.crop_batch(images[0])).shape == (1,)

    def test_metadata_survives_the_round_trip(self, model: Any, artifact: Path, tiny_checkpoint: Path) -> None:
        source = read_meta(tiny_checkpoint)
        assert read_meta(artifact).to_dict() == model.meta.to_dict()
        for key in ("preset", "model_config", "preprocess", "score"):
            assert getattr(model.meta, key) == getattr(source, key), key
        assert model.preprocess_config == source.preprocess_config
        if self.fmt != "torch":
            assert model.meta.source_checkpoint_sha256 == sha256_file(tiny_checkpoint)

    def test_bad_input_is_rejected_naming_it(self, model: Any, images: list[Path], tmp_path: Path,
                                             reference: dict[int, np.ndarray]) -> None:
        bad = corrupt_copy(images[0], tmp_path / "broken.jpg")
        with pytest.raises(ImageLoadError, match="broken.jpg"):
            model.predict([images[1], bad])
        results = list(model.iter_scores([images[1], bad, images[2]]))
        assert [r.ok for r in results] == [True, False, True] and results[1].source == str(bad)
        np.testing.assert_allclose([results[0].score, results[2].score], reference[1][1:3], rtol=0,
                                   atol=self.tol(model))

    def test_input_kinds_give_identical_scores(self, model: Any, images: list[Path]) -> None:
        path = images[5]
        rgb = np.asarray(Image.open(path).convert("RGB"))
        scores = [model.predict(path), model.predict(Image.open(path)), model.predict(rgb),
                  model.predict(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True), model.predict([rgb])]
        for s in scores[1:]:
            np.testing.assert_allclose(s, scores[0], rtol=0, atol=1e-6)
        assert abs(model.predict(np.ascontiguousarray(rgb[:, :, ::-1]))[0] - scores[0][0]) > 1e-4  # flag matters

    def test_predict_batch_checks_its_shape(self, model: Any, images: list[Path]) -> None:
        size = model.preprocess_config.crop_size
        for bad in (np.zeros((3, size, size), np.float32), np.zeros((2, 3, size, size + 1), np.float32),
                    np.zeros((2, 4, size, size), np.float32)):
            with pytest.raises(ValueError, match="batch"):
                model.predict_batch(bad)
        crops = model.crop_batch(images[0], crops=5)
        out = model.predict_batch(crops)
        assert out.shape == (5,) and out.dtype == np.float64
        assert out.mean() == pytest.approx(model.predict(images[0], crops=5)[0], abs=self.tol(model))
        # 0-255 pixels or NaN would score silently wrong: refused, naming what came in
        for bad, reason in [((crops * 255).astype(np.uint8), "dtype uint8"), (crops * 255, r"\[0, 255\]"),
                            (np.where(crops > 0.5, np.nan, crops), "nan")]:
            with pytest.raises(ValueError, match=reason):
                model.predict_batch(bad)

    @pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
    def test_batch_size_must_be_a_positive_integer(self, artifact: Path, batch_size: Any) -> None:
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            glia_edge.load(artifact, batch_size=batch_size, **self.options)

    def test_a_corrupt_artifact_is_one_named_error(self, artifact: Path, tmp_path: Path) -> None:
        main = artifact / "model.xml" if artifact.is_dir() else artifact
        cut = tmp_path / artifact.name
        if artifact.is_dir():  # an IR folder: a truncated .xml beside its .bin
            shutil.copytree(artifact, cut)
        (cut / "model.xml" if artifact.is_dir() else cut).write_bytes(main.read_bytes()[:64])  # a cut-off copy
        for call in (read_meta, lambda p: glia_edge.load(p, **self.options)):
            with pytest.raises(GliaError) as info:
                call(cut)
            assert str(cut) in str(info.value) and "\n" not in str(info.value)

    def test_a_closed_backend_says_so(self, artifact: Path, images: list[Path]) -> None:
        model = glia_edge.load(artifact, **self.options)
        model.close()
        with pytest.raises(RuntimeError, match="closed"):  # before: AttributeError/TypeError on None
            model.predict(images[0])

    def test_shared_by_threads(self, model: Any, images: list[Path]) -> None:
        """N threads x M calls on one backend: no errors, scores equal to serial calls, and at least
        two runtime calls in flight at once."""
        threads, calls, per_call = 4, 3, 2
        jobs = [[images[(t * calls + c) * per_call % len(images):][:per_call] for c in range(calls)]
                for t in range(threads)]
        serial = [[model.predict(job) for job in thread_jobs] for thread_jobs in jobs]
        inflight, errors = InFlight(), []
        results: list[list[np.ndarray]] = [[] for _ in range(threads)]
        start = threading.Barrier(threads)

        def worker(t: int) -> None:
            try:
                start.wait()
                results[t] = [model.predict(job) for job in jobs[t]]
            except BaseException as exc:  # reported below, with the thread's number
                errors.append(f"thread {t}: {exc!r}")

        with self.instrument(model, inflight):
            pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join(120)
        assert not errors, errors
        assert inflight.calls >= threads * calls and inflight.peak >= 2, (inflight.calls, inflight.peak)
        for t in range(threads):
            for got, want in zip(results[t], serial[t], strict=True):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * model.meta.score_spec.range)


class TestTorchRuntime(RuntimeContract):
    backend, fmt, has_static = "TorchBackend", "torch", False

    def build(self, checkpoint: Path, static: bool) -> Path:
        return checkpoint

    @contextmanager
    def instrument(self, model: Any, inflight: InFlight) -> Iterator[None]:
        module = model._module
        model._module = inflight.wrap(module)  # the forward pass itself
        try:
            yield
        finally:
            model._module = module


class TestOnnxRuntime(RuntimeContract):
    backend, fmt = "OnnxRuntimeBackend", "onnx"

    def build(self, checkpoint: Path, static: bool) -> Path:
        return exported(checkpoint, "onnx", static)

    @contextmanager
    def instrument(self, model: Any, inflight: InFlight) -> Iterator[None]:
        session = model.session
        model.session = Proxy(session, run=inflight.wrap(session.run))  # InferenceSession.run
        try:
            yield
        finally:
            model.session = session


class TestOpenVinoXml(RuntimeContract):
    backend, fmt = "OpenVinoBackend", "openvino"
    options = {"precision": "fp32"}

    def build(self, checkpoint: Path, static: bool) -> Path:
        xml = exported(checkpoint, "openvino", static)
        assert xml.suffix == ".xml"
        return xml

    def test_fp32_runs_in_f32(self, model: Any) -> None:
        assert model.inference_precision == "f32"

    @contextmanager
    def instrument(self, model: Any, inflight: InFlight) -> Iterator[None]:
        """Each infer request's ``infer``: the pool must hand concurrent callers separate requests."""
        def counted(request: Any) -> Any:
            return Proxy(request, infer=inflight.wrap(request.infer))

        # One pool per compiled batch size; the serial pass before the block compiled every size used.
        saved = {key: pool.compiled for key, pool in model._pools.items()}
        for pool in model._pools.values():
            pool.compiled = Proxy(pool.compiled, create_infer_request=lambda c=pool.compiled: counted(
                c.create_infer_request()))
            pool.idle = [counted(r) for r in pool.idle]
        try:
            yield
        finally:
            for key, pool in model._pools.items():
                pool.compiled = saved.get(key, pool.compiled)
                pool.idle = [r._target if isinstance(r, Proxy) else r for r in pool.idle]
        for pool in model._pools.values():
            assert pool.created <= model.max_requests and len(pool.idle) == pool.created


class TestOpenVinoOnnx(TestOpenVinoXml):
    """OpenVINO running the ONNX model itself: the packaged FP32 model on an OpenVINO-only install."""

    fmt = "onnx"
    options: ClassVar[dict[str, Any]] = {"runtime": "openvino"}

    def build(self, checkpoint: Path, static: bool) -> Path:
        return exported(checkpoint, "onnx", static)


class TestOpenVinoIrFolder(TestOpenVinoXml):
    options: ClassVar[dict[str, Any]] = {}  # no hint: the artifact's own precision (fp32) is pinned

    def build(self, checkpoint: Path, static: bool) -> Path:
        return super().build(checkpoint, static).parent


@pytest.mark.gpu
@pytest.mark.skipif(TRT_SKIP is not None, reason=f"TensorRT runtime unavailable: {TRT_SKIP}")
class TestTensorRtRuntime(RuntimeContract):
    backend, fmt = "TensorRtBackend", "trt"

    def build(self, checkpoint: Path, static: bool) -> Path:
        engine = exported(checkpoint, "trt", static)
        assert engine.suffix == ".engine" and read_sidecar(engine).format == "trt"
        return engine


def test_every_format_has_a_contract_subclass() -> None:
    """Contract subclasses are not discovered: a new row in FORMATS without one would go untested."""
    from glia_edge.formats import FORMATS

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    covered = {(c.fmt, c.backend) for c in subclasses(RuntimeContract) if c.__module__ == __name__}
    missing = [f"{name} ({fmt.backend})" for name, fmt in FORMATS.items()
               if (name, fmt.backend.rpartition(":")[2]) not in covered]
    assert not missing, f"add a RuntimeContract subclass (tests/test_runtimes_contract.py) for: {', '.join(missing)}"


@pytest.mark.skipif(TRT_SKIP is None, reason="TensorRT and a GPU are present")
def test_tensorrt_engine_without_tensorrt_says_why(tmp_path: Path, tiny_checkpoint: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not loadable here")
    sidecar_path(engine).write_text(read_meta(tiny_checkpoint).derive(format="trt").to_json())
    with pytest.raises(BackendUnavailableError, match="TensorRT|CUDA|cuda-python"):
        glia_edge.load(engine)


# -- ONNX Runtime and OpenVINO options ----------------------------------------------------------
@pytest.fixture(scope="module")
def ov_xml(tiny_checkpoint: Path) -> Path:
    return exported(tiny_checkpoint, "openvino")


def test_onnxruntime_threads(tiny_checkpoint: Path, images: list[Path], reference: dict[int, np.ndarray]) -> None:
    with glia_edge.load(exported(tiny_checkpoint, "onnx"), threads=1) as model:
        assert model.session.get_session_options().intra_op_num_threads == 1
        np.testing.assert_allclose(model.predict(images[:SUBSET]), reference[1][:SUBSET], atol=FP32_TOL * 100)


def test_openvino_threads(ov_xml: Path) -> None:
    with glia_edge.load(ov_xml, threads=1) as model:
        assert int(model.compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_openvino_fp32_is_pinned_although_the_cpu_defaults_to_bf16(ov_xml: Path) -> None:
    from glia_edge.ov_core import shared_core

    if "BF16" not in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no BF16: OpenVINO runs f32 by default")
    with glia_edge.load(ov_xml, inference_precision="device") as model:
        assert model.inference_precision == "bf16"  # what an unpinned "fp32" run really does here
    with glia_edge.load(ov_xml, inference_precision="fp32") as model:
        assert model.inference_precision == "f32"


def test_openvino_bf16_ranks_like_fp32(ov_xml: Path, images: list[Path], reference: dict[int, np.ndarray]) -> None:
    with glia_edge.load(ov_xml, inference_precision="bf16") as model:
        if model.inference_precision != "bf16":
            pytest.skip(f"this CPU runs {model.inference_precision}, not bf16")
        scores = model.predict(images)
    assert spearmanr(scores, reference[1]).statistic >= 0.99


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_openvino_throughput_mode_matches_latency_mode(tiny_checkpoint: Path, images: list[Path], static: bool) -> None:
    xml = exported(tiny_checkpoint, "openvino", static)
    with glia_edge.load(xml, mode="latency") as latency, glia_edge.load(xml, mode="throughput") as throughput:
        assert throughput.mode == "throughput" and throughput.inference_precision == "f32"
        np.testing.assert_allclose(throughput.predict(images), latency.predict(images), rtol=0,
                                   atol=FP32_TOL * latency.meta.score_spec.range)


def test_openvino_compiles_each_batch_size_static_with_the_scores_of_one_dynamic_compilation(
        ov_xml: Path, images: list[Path]) -> None:
    """``shapes="static"`` (the default): one compilation per batch size met, its batch axis fixed,
    scoring as the one dynamic compilation does; past MAX_STATIC_SHAPES the least recently used
    sizes go and the backend's own stays; a batch split over requests pads its last part."""
    from glia_edge.runtimes.openvino import MAX_STATIC_SHAPES

    with glia_edge.load(ov_xml) as static, glia_edge.load(ov_xml, shapes="dynamic") as dynamic:
        tol = FP32_TOL * static.meta.score_spec.range
        assert (static.shapes, static.compiled_batches, dynamic.compiled_batches) == ("static", [8], [None])
        assert static.compiled.input(0).get_partial_shape().is_static
        assert dynamic.compiled.input(0).get_partial_shape().is_dynamic
        crops = np.concatenate([static.crop_batch(path) for path in images[:8]])
        for n in (8, 3, 1, 5, 2, 6, 7):
            np.testing.assert_allclose(static.predict_batch(crops[:n]), dynamic.predict_batch(crops[:n]), rtol=0,
                                       atol=tol)
        assert len(static.compiled_batches) == MAX_STATIC_SHAPES and sorted(static.compiled_batches) == [2, 6, 7, 8]
        static.split = 3  # as the THROUGHPUT hint sets it: 8 crops -> parts of 3, 3 and 2 padded to 3
        np.testing.assert_allclose(static.predict_batch(crops), dynamic.predict_batch(crops), rtol=0, atol=tol)
        assert 3 in static.compiled_batches
    with glia_edge.load(ov_xml, mode="throughput") as throughput:  # full batches run as `split` parts
        assert throughput.compiled_batches == [-(-throughput.batch_size // throughput.split)]
    with pytest.raises(ValueError, match="shapes must be one of static, dynamic"):
        glia_edge.load(ov_xml, shapes="fixed")


@pytest.fixture(scope="module")
def onnx_model(tiny_checkpoint: Path) -> Iterator[Any]:
    with glia_edge.load(exported(tiny_checkpoint, "onnx"), threads=1) as model:
        yield model


def test_one_image_where_several_are_expected_is_refused(onnx_model: Any, images: list[Path]) -> None:
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    for one in (rgb, str(images[0]), images[0], Image.open(images[0])):
        for call in (onnx_model.iter_scores, onnx_model.score_paths):  # before: one score per pixel row or letter
            with pytest.raises(TypeError, match="got one image"):
                list(call(one))
    frames = np.stack([rgb, rgb])  # a 4-D stack is a collection of frames
    assert [r.ok for r in onnx_model.iter_scores(frames)] == [True, True]
    gen = onnx_model.predict(p for p in images[:2])  # any iterable, not only a list
    np.testing.assert_allclose(gen, onnx_model.predict(images[:2]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(onnx_model.score_paths(iter(images[:2])), gen, rtol=0, atol=1e-9)
    for crops in (0, 3, True):
        with pytest.raises(ValueError, match="crops must be one of"):  # 0 was taken as the default
            onnx_model.predict(images[0], crops=crops)


def test_a_failing_iterable_keeps_what_was_scored_before_it(onnx_model: Any, images: list[Path]) -> None:
    def camera() -> Iterator[Path]:
        yield from images[:3]
        raise RuntimeError("camera died")

    for workers in (0, 2):
        got = []
        with pytest.raises(RuntimeError, match="camera died"):
            for result in onnx_model.iter_scores(camera(), decode_workers=workers):
                got.append(result.score)
        np.testing.assert_allclose(got, onnx_model.predict(images[:3]), rtol=0, atol=1e-9)


def test_in_memory_inputs_are_named_with_their_position(onnx_model: Any, images: list[Path], tmp_path: Path) -> None:
    data = images[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    lazy = Image.open(tmp_path / "cut.jpg")  # opened, not decoded: the truncation shows at decode
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    results = list(onnx_model.iter_scores([images[1], lazy, rgb[:0], images[2]]))
    assert [r.ok for r in results] == [True, False, False, True]  # before: the OSError ended the batch
    assert results[1].source.startswith("[1] <PIL image") and "truncated" in (results[1].error or "")
    assert results[2].source.startswith("[2] <array") and results[2].error == "empty array"


def test_mode_i_images_are_read_as_16_bit_whatever_their_values(onnx_model: Any, images: list[Path]) -> None:
    gray = np.asarray(Image.open(images[0]).convert("L")).astype(np.int32) * 100  # 16-bit values in a mode I image
    bright = gray.copy()
    bright[0, 0] = 65535
    dark = onnx_model.predict(Image.fromarray(gray // 256, "I"))  # below 256 everywhere: was read as 8-bit
    assert onnx_model.predict(Image.fromarray(gray, "I"))[0] == pytest.approx(onnx_model.predict(gray.astype(np.uint16))[0])
    assert dark[0] == pytest.approx(onnx_model.predict((gray // 256).astype(np.uint16))[0])
    assert abs(onnx_model.predict(Image.fromarray(bright, "I"))[0] - onnx_model.predict(Image.fromarray(gray, "I"))[0]) < 1
    with pytest.raises(ImageLoadError, match="outside 0-65535"):
        onnx_model.predict(Image.fromarray(gray * 1000, "I"))


def test_load_refuses_unknown_runtimes_empty_paths_and_edited_metadata(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import json

    import onnx

    from glia_edge.errors import UnsupportedArtifactError
    from glia_edge.meta import META_KEY

    with pytest.raises(ValueError, match="unknown artifact format 'onnxruntime'; known: torch, onnx"):
        glia_edge.load(exported(tiny_checkpoint, "onnx"), runtime="onnxruntime")
    with pytest.raises(ValueError, match="empty artifact path"):  # before: opened the working folder
        glia_edge.load("")
    source = onnx.load(str(exported(tiny_checkpoint, "onnx")))
    meta = json.loads(next(p.value for p in source.metadata_props if p.key == META_KEY))
    size = meta["preprocess"]["crop_size"]
    edits = {"garbled": "{bad", "empty": "{}",
             "crops": json.dumps({**meta, "preprocess": {**meta["preprocess"], "crops": 7}}),
             "size": json.dumps({**meta, "preprocess": {**meta["preprocess"], "crop_size": size + 8,
                                                         "short_side": size + 16}})}
    for name, text in edits.items():
        for prop in source.metadata_props:
            if prop.key == META_KEY:
                prop.value = text
        path = tmp_path / f"{name}.onnx"
        onnx.save(source, str(path))
        with pytest.raises(UnsupportedArtifactError) as info:  # before: JSONDecodeError, TypeError, or an error at predict
            glia_edge.load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
        if name == "size":
            assert "do not belong together" in str(info.value)
