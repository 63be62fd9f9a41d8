"""The device check (``benchmarks/gpu_check.sh``): TensorRT engines built, checked and timed on an NVIDIA GPU.

On a machine with an NVIDIA GPU and TensorRT (a workstation, a server or a Jetson), unattended:

1. the TensorRT probe (TensorRT 10.3+, cuda-python, a GPU, a builder): anything missing stops the
   check at once with exit code 3 and the reason, before any work;
2. FP16 and INT8 engines (INT8 with Q/DQ on the FP32 graph, the default, and on the FP16 graph)
   of the default model and of ``glia_vit_small`` (random weights: a speed model), all with one
   timing cache in the work folder, built with detailed profiling so TensorRT's engine inspector
   gives each engine's layers by output precision (what TensorRT really ran in FP16, INT8, FP32);
3. their agreement with ONNX Runtime FP32 (CPU) on the default model's held-out set: Spearman
   and max |delta score| as a fraction of the declared score range; the default model's engines
   must reach Spearman >= ``--min-spearman`` (0.99) and max |delta| <= ``--max-delta`` of the range
   (FP16 0.01, INT8 0.10; ``glia_vit_small``'s random head is reported, not gated);
4. ``glia-edge bench --targets torch,onnx,trt`` per model (PyTorch on ``cuda``; TensorRT rows
   timed end to end, wall clock), which on a Jetson also records nvpmodel, clock locking and
   tegrastats power;
5. ``benchmarks/RESULTS-gpu.md`` with the machine, every figure and what passed.

Each step checks the remaining time (``--time-limit``, 600 s) and stops with what it has. A step
that fails (an engine build, a gate, a bench run) is a FAIL row or note and the check goes on:
the results file is always written, with what every other step found.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("glia_edge.gpu_check")

#: Exit codes: 0 all checks passed, 1 a check failed its gate, 2 bad arguments, 3 no GPU/TensorRT here,
#: 4 out of time, 5 a step raised an error (an engine build, a bench run; the results file says which).
EXIT_FAILED, EXIT_USAGE, EXIT_NO_DEVICE, EXIT_TIMEOUT, EXIT_ERROR = 1, 2, 3, 4, 5
MODELS = ("default", "glia_vit_small")
#: Max |delta score| against ONNX Runtime FP32, as a fraction of the score range.
MAX_DELTA = {"fp16": 0.01, "int8": 0.10}


@dataclass(frozen=True)
class Agreement:
    """An engine's scores against ONNX Runtime FP32 on the same images."""

    model: str
    variant: str  # fp16, int8 (Q/DQ on the FP32 graph), int8-fp16graph
    images: int
    spearman: float
    max_abs_delta: float
    max_rel_delta: float  # of the score range
    gated: bool
    passed: bool
    error: str | None = None  # the step raised: no figures
    layers: dict[str, int] | None = None  # engine layers by output precision (TensorRT's engine inspector)


def failed(model: str, variant: str, exc: BaseException) -> Agreement:
    """The row of a variant whose build or scoring raised."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    nan = float("nan")
    return Agreement(model, variant, 0, nan, nan, nan, gated=True, passed=False, error=text[:300])


def agreement(model: str, variant: str, reference: np.ndarray, scores: np.ndarray, score_range: float, *,
              min_spearman: float, max_delta: float | None, gated: bool) -> Agreement:
    """Spearman and max |delta| of ``scores`` against ``reference``; ``passed`` is the gate when ``gated``."""
    from scipy.stats import spearmanr

    ok = np.isfinite(reference) & np.isfinite(scores)
    if ok.sum() < 3:
        raise ValueError(f"{model} {variant}: fewer than 3 images scored by both")
    rho = float(spearmanr(reference[ok], scores[ok])[0])
    delta = float(np.abs(reference[ok] - scores[ok]).max())
    rel = delta / score_range if score_range > 0 else float("inf")
    passed = rho >= min_spearman and (max_delta is None or rel <= max_delta)
    return Agreement(model, variant, int(ok.sum()), rho, delta, rel, gated, passed or not gated)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, step: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"out of time before {step}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"), help="work folder (artifacts, reports)")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS-gpu.md"),
                        help="the Markdown summary written at the end")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: default,glia_vit_small")
    parser.add_argument("--eval-size", type=int, default=200, help="held-out images scored (0 = all)")
    parser.add_argument("--calib-size", type=int, default=100, help="INT8 calibration images")
    parser.add_argument("--min-spearman", type=float, default=0.99)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole check")
    parser.add_argument("--no-bench", action="store_true", help="agreement only, no glia-edge bench")
    args = parser.parse_args(list(argv))
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models takes {', '.join(MODELS)}, got {args.models!r}")
    if args.eval_size < 0 or args.calib_size < 1 or not 0 < args.min_spearman <= 1 or args.time_limit <= 0:
        parser.error("--eval-size >= 0, --calib-size >= 1, 0 < --min-spearman <= 1 and --time-limit > 0")
    args.models = models
    return args


def _checkpoint(model: str, work: Path) -> Path:
    if model == "default":
        from glia_edge.weights import default_checkpoint

        return default_checkpoint()
    from glia_edge.benchmarks.runner import _random_checkpoint

    path = work / f"{model}.random.safetensors"
    if not path.is_file():
        _random_checkpoint(model, path)
    return path


def _scores(artifact: Path, images: list[Path]) -> np.ndarray:
    import glia_edge

    with glia_edge.load(artifact) as backend:
        return backend.score_paths(images)


VARIANTS = (("fp16", "fp16", {}), ("int8", "int8", {"int8_graph": "fp32"}),
            ("int8-fp16graph", "int8", {"int8_graph": "fp16"}))


def build_engine(ckpt: Path, out: Path, precision: str, work: Path, args: argparse.Namespace, **extra: Any) -> Path:
    """The TensorRT-ready ONNX exported to ``out``, then its engine: with the work folder's shared
    timing cache and detailed profiling (for :func:`layer_precisions`)."""
    from glia_edge.export import export
    from glia_edge.export.tensorrt import EngineOptions, engine_meta, onnx_to_engine, trt_onnx_meta
    from glia_edge.export.writers import ENGINE_OPTIONS_KEY
    from glia_edge.weights import default_calibration

    calib = {"calib": default_calibration(), "calib_size": args.calib_size} if precision == "int8" else {}
    onnx = export(ckpt, target="trt", precision=precision, build_engine=False, output=out, **calib, **extra).path
    meta = trt_onnx_meta(onnx)
    names = {"min_batch", "opt_batch", "max_batch", "workspace_gib"}
    recorded = {k: v for k, v in (meta.export.get(ENGINE_OPTIONS_KEY) or {}).items() if k in names}
    opts = EngineOptions(**recorded, timing_cache=work / "timing.cache")
    return onnx_to_engine(onnx, onnx.with_name("model.engine"), precision=precision, options=opts,
                          meta=engine_meta(meta, opts), detailed=True)


def _layers(engine: Path) -> dict[str, int] | None:
    from glia_edge.export.tensorrt import layer_precisions

    try:
        return layer_precisions(engine)
    except Exception as exc:  # a report, never a reason to stop
        log.warning("%s: engine inspector failed: %s", engine, exc)
        return None


def check_model(model: str, work: Path, images: list[Path], args: argparse.Namespace,
                deadline: Deadline) -> list[Agreement]:
    """Engines of one model at FP16 and INT8 (both graphs), each against ONNX Runtime FP32.

    A variant that raises (build, inspection, scoring) is a FAIL row with the error; the others go on.
    Running out of time (``TimeoutError``) stops the model.
    """
    from glia_edge.export import export
    from glia_edge.formats import read_meta

    ckpt = _checkpoint(model, work)
    deadline.check(f"{model}: ONNX Runtime FP32 reference")
    onnx = export(ckpt, target="onnx", precision="fp32", output=work / f"{model}.fp32.onnx").path
    reference = _scores(onnx, images)
    score_range = read_meta(ckpt).score_spec.range
    results = []
    for variant, precision, extra in VARIANTS:
        deadline.check(f"{model} {variant}")
        started = time.monotonic()
        try:
            engine = build_engine(ckpt, work / f"{model}.{variant}.trt", precision, work, args, **extra)
            log.info("%s %s: engine built in %.0f s", model, variant, time.monotonic() - started)
            row = agreement(model, variant, reference, _scores(engine, images), score_range,
                            min_spearman=args.min_spearman, max_delta=MAX_DELTA[precision], gated=model == "default")
            results.append(replace(row, layers=_layers(engine)))
        except TimeoutError:
            raise
        except Exception as exc:
            log.error("%s %s failed: %s", model, variant, exc)
            results.append(failed(model, variant, exc))
        log.info("%s", results[-1])
    return results


def run_bench(model: str, work: Path, deadline: Deadline) -> Path:
    """``glia-edge bench --targets torch,onnx,trt`` on ``cuda``; returns its Markdown report."""
    out = work / f"bench-{model}"
    cmd = ["glia-edge", "bench", "--targets", "torch,onnx,trt", "--precisions", "fp32,fp16,int8",
           "--batch", "1,8", "--device", "cuda", "--repeats", "10", "--eval-size", "60", "--no-compile",
           "--output", str(out)] + (["--preset", model] if model != "default" else [])
    timeout = max(deadline.left(), 1.0)
    log.info("running %s (at most %.0f s)", " ".join(cmd), timeout)
    subprocess.run(cmd, check=True, timeout=timeout)
    return out / "bench.md"


def _layers_text(layers: dict[str, int] | None) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in layers.items()) if layers else "n/a"


def write_results(path: Path, machine: dict[str, Any], results: list[Agreement], benches: dict[str, Path],
                  notes: list[str], elapsed: float, args: argparse.Namespace) -> Path:
    from glia_edge.benchmarks.machine import machine_line

    scored = [r for r in results if r.error is None]
    try:
        machine_text = machine_line(machine)
    except Exception:  # machine_info itself failed: the results still count
        machine_text = "not read"
    lines = ["# glia-edge on an NVIDIA GPU (benchmarks/gpu_check.sh)", "", f"Machine: {machine_text}", "",
             f"Check took {elapsed:.0f} s. Agreement: each TensorRT engine against ONNX Runtime FP32 (CPU) on the "
             f"default model's held-out set ({scored[0].images if scored else 0} images); gate for the default "
             f"model: Spearman >= {args.min_spearman}, max |delta| <= {MAX_DELTA['fp16']:.0%} (FP16) / "
             f"{MAX_DELTA['int8']:.0%} (INT8) of the score range. `glia_vit_small` has random weights: reported only. "
             "Layers: the engine's layers by output precision, from TensorRT's engine inspector.",
             "", "| model | engine | images | Spearman | max abs delta | of range | layers | result |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.model} | {r.variant} | - | - | - | - | - | FAIL: {r.error.replace('|', '/')} |")
            continue
        verdict = ("pass" if r.passed else "FAIL") if r.gated else "reported"
        lines.append(f"| {r.model} | {r.variant} | {r.images} | {r.spearman:.4f} | {r.max_abs_delta:.4g} | "
                     f"{r.max_rel_delta:.2%} | {_layers_text(r.layers)} | {verdict} |")
    lines += ["", "## Speed (glia-edge bench; TensorRT rows timed end to end, wall clock)", ""]
    lines += [f"- {model}: [{p.name}]({p})" for model, p in benches.items()] or ["- not run"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="gpu_check: %(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0  # --help exits 0
    from glia_edge.runtimes.tensorrt import unavailable_error

    err = unavailable_error()
    if err is not None:
        log.error("cannot run here (%s): %s", err.kind, err)
        return EXIT_NO_DEVICE
    started, deadline = time.monotonic(), Deadline(args.time_limit)
    results: list[Agreement] = []
    benches: dict[str, Path] = {}
    notes: list[str] = []
    stopped = errors = False
    machine: dict[str, Any] = {}
    try:
        from glia_edge.benchmarks.machine import machine_info
        from glia_edge.export.calibration import read_image_list
        from glia_edge.weights import default_set_csv

        machine = machine_info()
        work = args.out
        work.mkdir(parents=True, exist_ok=True)
        images = list(read_image_list(default_set_csv("test")).paths)
        images = images[: args.eval_size] if args.eval_size else images
        for model in args.models:
            try:
                results += check_model(model, work, images, args, deadline)
            except TimeoutError:
                raise
            except Exception as exc:  # the model's reference (export, ONNX Runtime) failed: its engines untested
                log.error("%s failed: %s", model, exc)
                notes.append(f"{model}: FAIL, no engine checked: {_one_line(exc)}")
                errors = True
        for model in [] if args.no_bench else args.models:
            deadline.check(f"bench {model}")
            try:
                benches[model] = run_bench(model, work, deadline)
            except subprocess.TimeoutExpired:
                raise
            except Exception as exc:  # CalledProcessError (its output is above), a missing glia-edge, ...
                log.error("bench %s failed: %s", model, exc)
                notes.append(f"bench {model}: FAIL: {_one_line(exc)}")
                errors = True
    except (TimeoutError, subprocess.TimeoutExpired) as exc:
        notes.append(f"stopped: {exc}")
        stopped = True
    except Exception as exc:  # anything else: still write what was found
        log.exception("gpu check failed")
        notes.append(f"FAIL: {_one_line(exc)}")
        errors = True
    errors = errors or any(r.error is not None for r in results)
    code = EXIT_TIMEOUT if stopped else EXIT_ERROR if errors else EXIT_FAILED if any(not r.passed for r in results) else 0
    path = write_results(args.results, machine, results, benches, notes, time.monotonic() - started, args)
    log.info("wrote %s (%s)", path, "all checks passed" if code == 0 else f"exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
