"""What the package ships: the default model's checkpoint, the artifacts exported from it (each
recording that checkpoint's hash), the sample images, all inside a wheel under the 25 MB budget."""
from __future__ import annotations

import json
import zipfile

import pytest

from _wheel import built_wheel
from glia_edge.formats import read_meta
from glia_edge.meta import sha256_file
from glia_edge.recipes.package_artifacts import SUMMARY
from glia_edge.weights import DEFAULT_MODEL, EXPORTED, PACKAGED, default_checkpoint, sample_images

WHEEL_BUDGET_MB = 25.0
WEIGHTS = default_checkpoint().parent


def test_every_shipped_artifact_comes_from_the_shipped_checkpoint() -> None:
    checkpoint_sha = sha256_file(default_checkpoint())
    summary = json.loads((WEIGHTS / SUMMARY).read_text())
    assert summary["checkpoint_sha256"] == checkpoint_sha
    source = read_meta(default_checkpoint())
    for name, (fmt, precision) in EXPORTED.items():
        path = WEIGHTS / name
        assert path.exists(), f"{name} is missing: python -m glia_edge.recipes.package_artifacts"
        meta = read_meta(path)
        assert (meta.format, meta.precision) == (fmt, precision), name
        assert meta.source_checkpoint_sha256 == checkpoint_sha, (
            f"{name} was exported from another checkpoint: rerun python -m glia_edge.recipes.package_artifacts")
        assert (meta.preset, meta.preprocess, meta.score) == (source.preset, source.preprocess, source.score)
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        assert summary["artifacts"][name]["sha256"] == {p.name: sha256_file(p) for p in files}, name
        gate = summary["artifacts"][name]["gate"]
        assert gate["spearman"] >= (0.999 if precision == "fp32" else 0.95), (name, gate)


def test_the_pick_order_names_only_shipped_files() -> None:
    assert {a.file for a in PACKAGED} == {*EXPORTED, f"{DEFAULT_MODEL}.safetensors"}
    assert [a.precision for a in PACKAGED][:3] == ["fp32"] * 3  # every install has an FP32 pick first
    assert len(sample_images()) >= 3


@pytest.mark.timeout(900)
def test_the_wheel_holds_the_model_and_fits_the_budget() -> None:
    wheel = built_wheel()
    size_mb = wheel.stat().st_size / 2**20
    assert size_mb <= WHEEL_BUDGET_MB, f"{wheel.name} is {size_mb:.1f} MB"
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [f"glia_edge/weights/{DEFAULT_MODEL}.safetensors", f"glia_edge/weights/{SUMMARY}"]
    for name in EXPORTED:
        path = WEIGHTS / name
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        expected += [f"glia_edge/weights/{p.relative_to(WEIGHTS).as_posix()}" for p in files]
    expected += [f"glia_edge/weights/samples/{p.name}" for p in sample_images()]
    missing = [n for n in expected if n not in names]
    assert not missing, missing


def _pick(monkeypatch: pytest.MonkeyPatch, missing: set[str], **options: object) -> tuple[str, str]:
    import importlib.util

    from glia_edge.runtimes.base import pick_default

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    path, cls = pick_default(**options)
    monkeypatch.undo()
    return path.name, cls.format


def test_default_pick_follows_the_fixed_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.errors import BackendUnavailableError

    fp32_onnx, ckpt = f"{DEFAULT_MODEL}.fp32.onnx", f"{DEFAULT_MODEL}.safetensors"
    assert _pick(monkeypatch, set()) == (fp32_onnx, "openvino")
    assert _pick(monkeypatch, {"openvino"}) == (fp32_onnx, "onnx")
    assert _pick(monkeypatch, {"openvino", "onnxruntime"}) == (ckpt, "torch")
    assert _pick(monkeypatch, set(), precision="int8") == (f"{DEFAULT_MODEL}.int8.openvino", "openvino")
    assert _pick(monkeypatch, {"openvino"}, precision="int8") == (f"{DEFAULT_MODEL}.int8.onnx", "onnx")
    assert _pick(monkeypatch, set(), providers=["CPUExecutionProvider"]) == (fp32_onnx, "onnx")  # ORT's option
    with pytest.raises(BackendUnavailableError, match="pip install 'glia-edge\\[openvino\\]'"):
        _pick(monkeypatch, {"openvino", "onnxruntime", "torch"})


def test_every_fp32_pick_gives_the_checkpoints_scores() -> None:
    """Whichever runtime an install has, the default model scores the same (float tolerance)."""
    import glia_edge

    images = sample_images()
    scores = {}
    for runtime in ("openvino", "onnx", "torch"):
        with glia_edge.load(runtime=runtime) as model:
            assert model.meta.precision == "fp32" and type(model).format == runtime
            scores[runtime] = model.predict(images)
            tol = 1e-5 * model.meta.score_spec.range
    for runtime in ("openvino", "onnx"):
        assert abs(scores[runtime] - scores["torch"]).max() <= tol, (runtime, scores)


def test_batched_callers_get_openvinos_throughput_hint_with_the_same_scores() -> None:
    """score and watch open models with load_batched: OpenVINO splits batches over its streams
    (THROUGHPUT hint), other backends and single-item callers load as load() does."""
    import glia_edge
    from glia_edge.runtimes.base import load_batched

    images = sample_images()
    with load_batched() as batched, glia_edge.load() as plain:
        assert type(batched).format == "openvino" and (batched.mode, plain.mode) == ("throughput", "latency")
        assert batched.inference_precision == plain.inference_precision == "f32"  # default scores stay FP32
        assert abs(batched.predict(images) - plain.predict(images)).max() <= 1e-5 * plain.meta.score_spec.range
    with load_batched(batched=False) as single:
        assert single.mode == "latency"
    onnx = WEIGHTS / f"{DEFAULT_MODEL}.fp32.onnx"
    with load_batched(onnx, runtime="openvino", precision="fp32") as by_path:
        assert by_path.mode == "throughput"
    with load_batched(onnx, runtime="onnx") as ort:
        assert type(ort).format == "onnx"
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        load_batched(WEIGHTS / "missing.xml")
