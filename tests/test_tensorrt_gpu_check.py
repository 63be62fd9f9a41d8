"""``benchmarks/gpu_check.sh`` where it cannot run (no GPU/TensorRT): arguments, the fast refusal, the gate's maths.

The check itself needs an NVIDIA GPU with TensorRT; here it must refuse at once with the probe's
reason (exit 3), reject bad arguments (exit 2) and print its usage (exit 0).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_refuses_at_once_without_gpu_or_tensorrt(tmp_path: Path) -> None:
    from glia_edge.runtimes.tensorrt import unavailable_error

    err = unavailable_error()
    if err is None:
        pytest.skip("TensorRT and a GPU are present: the check would run for minutes")
    started = time.monotonic()
    proc = run("--out", str(tmp_path / "out"), "--results", str(tmp_path / "RESULTS-gpu.md"))
    assert proc.returncode == 3, proc.stderr
    assert f"cannot run here ({err.kind})" in proc.stderr and str(err) in proc.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()  # no work started


@pytest.mark.parametrize("args", [["--models", "resnet"], ["--time-limit", "0"], ["--eval-size", "-1"],
                                  ["--no-such-flag"]])
def test_bad_arguments_exit_2(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2 and "error:" in proc.stderr


def test_usage_and_missing_interpreter() -> None:
    proc = run("--help")
    assert proc.returncode == 0 and "--time-limit" in proc.stdout and "--models" in proc.stdout
    proc = run(env={"PYTHON": "/nonexistent/python"})
    assert proc.returncode == 3 and "no Python interpreter" in proc.stderr


def test_agreement_gate() -> None:
    from glia_edge.benchmarks.gpu_check import agreement

    ref = np.linspace(10, 100, 50)
    same = agreement("default", "fp16", ref, ref + 0.5, 90.0, min_spearman=0.99, max_delta=0.01, gated=True)
    assert same.passed and same.spearman == pytest.approx(1.0) and same.max_rel_delta == pytest.approx(0.5 / 90)
    far = agreement("default", "fp16", ref, ref + 2.0, 90.0, min_spearman=0.99, max_delta=0.01, gated=True)
    assert not far.passed  # 2.2% of the range > 1%
    shuffled = np.random.default_rng(0).permutation(ref)
    bad = agreement("default", "int8", ref, shuffled, 90.0, min_spearman=0.99, max_delta=None, gated=True)
    assert bad.spearman < 0.99 and not bad.passed
    reported = agreement("glia_vit_small", "int8", ref, shuffled, 90.0, min_spearman=0.99, max_delta=None, gated=False)
    assert reported.passed  # random weights: reported, not gated
    with pytest.raises(ValueError, match="fewer than 3"):
        agreement("default", "fp16", ref[:2], ref[:2], 90.0, min_spearman=0.99, max_delta=0.01, gated=True)


def test_require_tensorrt_turns_tensorrt_skips_into_failures() -> None:
    """``GLIA_REQUIRE_TENSORRT=1`` (a GPU CI): a TensorRT test that skips fails, naming the reason."""
    from glia_edge.runtimes.tensorrt import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: nothing skips")
    target = "tests/test_export_tensorrt.py::test_timing_cache_is_written_and_reused"
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target]
    root = Path(__file__).parent.parent
    plain = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=root,
                           env={k: v for k, v in os.environ.items() if k != "GLIA_REQUIRE_TENSORRT"})
    assert plain.returncode == 0 and "1 skipped" in plain.stdout, plain.stdout
    strict = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=root,
                            env={**os.environ, "GLIA_REQUIRE_TENSORRT": "1"})
    text = " ".join(strict.stdout.split())
    # A skip at setup (a skipif mark, a skipping fixture) is reported as an error, one in the call as a failure.
    assert strict.returncode == 1 and ("1 error" in text or "1 failed" in text), strict.stdout
    assert "GLIA_REQUIRE_TENSORRT=1 but this TensorRT test skipped" in text and " ".join(reason.split()) in text


def test_a_failing_step_is_a_fail_row_and_the_results_are_written(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """An engine build that raises, a gate error and a bench that exits non-zero: FAIL rows and notes,
    every other variant still checked, RESULTS-gpu.md written, exit 5 (not 1, a failed gate)."""
    import subprocess as sp
    from types import SimpleNamespace

    import _trt_standin as standin
    import glia_edge.export as export_pkg
    from glia_edge.benchmarks import gpu_check
    from glia_edge.errors import BackendUnavailableError, ExportError
    from glia_edge.formats import read_meta, read_sidecar, write_sidecar
    from glia_edge.weights import default_checkpoint

    trt = standin.install(monkeypatch, standin.Settings(graph_precision="fp16"))
    meta = read_meta(default_checkpoint()).derive(format="onnx", precision="fp16")
    meta = meta.derive(export={**meta.export, "engine_options": {"min_batch": 1, "opt_batch": 4, "max_batch": 8,
                                                                  "workspace_gib": 2.0}})
    exports: list[dict] = []

    def fake_export(ckpt, *, target, precision, output, **kwargs):
        exports.append({"target": target, "precision": precision, **kwargs})
        output.mkdir(parents=True, exist_ok=True)
        path = output / ("model.trt.onnx" if target == "trt" else "model.onnx")
        path.write_bytes(b"onnx graph: the stand-in parser does not read it")
        if target == "trt":
            write_sidecar(path, meta)
        return SimpleNamespace(path=path)

    real_build = gpu_check.build_engine

    def build(ckpt, out, precision, work, args, **extra):
        if extra.get("int8_graph") == "fp32":
            raise ExportError("TensorRT failed to build the engine")
        if extra.get("int8_graph") == "fp16":
            raise BackendUnavailableError("out of GPU memory")
        return real_build(ckpt, out, precision, work, args, **extra)

    def bench(model, work, deadline):
        raise sp.CalledProcessError(1, ["glia-edge", "bench"])

    ref = np.linspace(10, 90, 30)
    monkeypatch.setattr(export_pkg, "export", fake_export)
    monkeypatch.setattr(gpu_check, "build_engine", build)
    monkeypatch.setattr(gpu_check, "_scores", lambda artifact, images: ref + 0.1)
    monkeypatch.setattr(gpu_check, "run_bench", bench)
    results = tmp_path / "RESULTS-gpu.md"
    code = gpu_check.main(["--out", str(tmp_path / "out"), "--results", str(results), "--models", "default",
                           "--eval-size", "30"])
    assert code == gpu_check.EXIT_ERROR == 5
    text = results.read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| default |")}
    assert "| pass |" in rows["fp16"] and "fp16 2, fp32 1" in rows["fp16"]  # layers from the engine inspector
    assert "FAIL: ExportError: TensorRT failed to build the engine" in rows["int8"]
    assert "FAIL: BackendUnavailableError: out of GPU memory" in rows["int8-fp16graph"]
    assert "bench default: FAIL: CalledProcessError" in text
    # The engine: built from the exported ONNX with its recorded profile, the work folder's timing cache, DETAILED.
    assert [e["build_engine"] for e in exports if e["target"] == "trt"] == [False]
    engine = tmp_path / "out" / "default.fp16.trt" / "model.engine"
    settings = read_sidecar(engine).export["engine"]
    assert settings["max_batch"] == 8 and settings["timing_cache"] == str(tmp_path / "out" / "timing.cache")
    assert (tmp_path / "out" / "timing.cache").read_bytes() == standin.CACHE_MAGIC + b"timings"
    assert trt.count("Builder") == 2  # the probe's (an answer: not kept) and the build's


def test_a_failed_gate_alone_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import _trt_standin as standin
    from glia_edge.benchmarks import gpu_check

    standin.install(monkeypatch)
    row = gpu_check.Agreement("default", "fp16", 30, 0.5, 9.0, 0.1, gated=True, passed=False)
    monkeypatch.setattr(gpu_check, "check_model", lambda *a: [row])
    code = gpu_check.main(["--out", str(tmp_path / "out"), "--results", str(tmp_path / "R.md"), "--models",
                           "default", "--no-bench"])
    assert code == gpu_check.EXIT_FAILED and "| FAIL |" in (tmp_path / "R.md").read_text()
