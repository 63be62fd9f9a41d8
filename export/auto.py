"""``--precision auto``: the fastest precision of a target on this machine that keeps the scores.

Each candidate configuration of the target (OpenVINO: FP32 pinned to f32, BF16, INT8 with f32
float parts, INT8 with BF16 float parts; ONNX Runtime: FP32, FP16, INT8) is exported and gated
against PyTorch FP32 on the validation images, then timed on this machine at the export's batch
size, all candidates alternating round-robin (the median counts). The fastest candidate whose
agreement passes the bound (:func:`passes`) is kept; what was measured for every candidate is
recorded in the artifact's metadata (``export.auto``) and its float precision in
``export.inference_precision``, which the OpenVINO backend then uses by default. The same bound
picks the recommendation line of ``glia-edge bench``.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: The agreement a candidate needs with PyTorch FP32 on the validation images.
AUTO_MIN_SPEARMAN = 0.99
#: ... and its largest |score delta|, as a share of the model's declared score range.
AUTO_MAX_DELTA_SHARE = 0.03

#: (artifact precision, inference precision hint or None) per target, in the order they are tried.
CANDIDATES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "openvino": (("fp32", "fp32"), ("bf16", "bf16"), ("int8", "fp32"), ("int8", "bf16")),
    "onnx": (("fp32", None), ("fp16", None), ("int8", None)),
}


def passes(spearman: float | None, max_delta_share: float | None) -> bool:
    """Whether an agreement with PyTorch FP32 is within the ``auto`` bound."""
    return (spearman is not None and max_delta_share is not None and np.isfinite(spearman)
            and spearman >= AUTO_MIN_SPEARMAN and max_delta_share <= AUTO_MAX_DELTA_SHARE)


def bound_text() -> str:
    return f"Spearman >= {AUTO_MIN_SPEARMAN} and max |delta| <= {AUTO_MAX_DELTA_SHARE:.0%} of the score range"


@dataclass
class Candidate:
    precision: str
    inference_precision: str | None
    spearman: float | None = None
    max_delta_share: float | None = None
    crops_per_s: float | None = None
    passes: bool = False
    error: str | None = None

    @property
    def name(self) -> str:
        return self.precision + (f" ({self.inference_precision} float parts)" if self.inference_precision else "")


def pick(candidates: Sequence[Candidate]) -> Candidate | None:
    """The fastest candidate within the bound, or None."""
    ok = [c for c in candidates if c.passes and c.crops_per_s]
    return max(ok, key=lambda c: c.crops_per_s or 0.0) if ok else None


def _time(backends: dict[int, Any], batch: np.ndarray, rounds: int) -> dict[int, float]:
    seconds: dict[int, list[float]] = {i: [] for i in backends}
    for backend in backends.values():
        backend.predict_batch(batch)  # warm-up
    for _ in range(rounds):
        for i, backend in backends.items():
            start = time.perf_counter()
            backend.predict_batch(batch)
            seconds[i].append(time.perf_counter() - start)
    return {i: len(batch) / statistics.median(s) for i, s in seconds.items()}


def export_auto(checkpoint: Path | None, *, target: str, output: Path | None, rounds: int = 10,
                **kwargs: Any) -> Any:
    """Export every candidate of ``target``, keep the fastest within the bound at ``output``.

    ``kwargs`` are :func:`glia_edge.export.export`'s (calibration, validation, batch ...). The
    gate needs validation images (``val`` or ``calib``; the default model brings its own).
    """
    import glia_edge
    from glia_edge.atomic import replace_path, staging_dir
    from glia_edge.errors import AccuracyGateError
    from glia_edge.export.exporter import (check_gate_images, check_output, check_request, default_output, export,
                                           with_gate)
    from glia_edge.export.writers import rewrite_meta
    from glia_edge.formats import get_format
    from glia_edge.export.gate import run_gate
    from glia_edge.export.options import known_options, option_applies

    # Every free check first: a bad value must not fail each candidate and then be blamed on the bound.
    check_request(target, precision="auto", **{k: v for k, v in kwargs.items() if k not in ("calib", "val")})

    if checkpoint is None and kwargs.get("val") is None and kwargs.get("calib") is None:
        from glia_edge.weights import default_set_csv

        # its validation set, as the packaged artifacts' gates (recipes/package_artifacts.py): not training photos
        kwargs["val"] = default_set_csv("validation")
    if target not in CANDIDATES:
        raise ValueError(f"--precision auto measures on this machine: not for {target} (choose a precision; "
                         f"auto covers {', '.join(CANDIDATES)})")
    if kwargs.get("val") is None and kwargs.get("calib") is None:  # now, not after every export
        raise AccuracyGateError("--precision auto needs validation images: pass --val or --calib")
    final = Path(output) if output else default_output(Path(checkpoint or "glia_vit_nano.synthetic"), target, "auto")
    check_output(final, get_format(target), checkpoint)
    final.parent.mkdir(parents=True, exist_ok=True)
    batch_size = int(kwargs.get("batch", 8))
    known = set(known_options())  # each candidate gets the options its precision reads (INT8's to INT8)
    candidates = [Candidate(p, h) for p, h in CANDIDATES[target]]
    gate_images = _gate_images(kwargs)  # one image set gates every candidate
    check_gate_images(gate_images, kwargs.get("max_drop"), "--val" if kwargs.get("val") else "--calib (--calib-size)")
    with staging_dir(final) as tmp:  # an interrupted run's folder is removed by the next (atomic.remove_stale)
        exported: dict[str, Any] = {}
        for precision in dict.fromkeys(c.precision for c in candidates):
            out = Path(tmp) / (f"{precision}.onnx" if target == "onnx" else precision)
            try:
                own = {k: v for k, v in kwargs.items() if k not in known or option_applies(k, target, precision)}
                exported[precision] = export(checkpoint, target=target, precision=precision, output=out, **own)
            except Exception as exc:  # a precision this machine cannot export (e.g. no calibration)
                log.warning("auto: %s %s not exported: %s", target, precision, exc)
                for c in candidates:
                    if c.precision == precision:
                        c.error = str(exc).splitlines()[0]
        backends: dict[int, Any] = {}
        gates: dict[int, Any] = {}
        try:
            for i, c in enumerate(candidates):
                if c.error:
                    continue
                result = exported[c.precision]
                options = {"batch_size": batch_size}
                if c.inference_precision:
                    options["inference_precision"] = c.inference_precision
                gate = result.gate_report  # the export's own gate scored gate_images at its default float precision
                if c.inference_precision and c.inference_precision != _default_float(result.meta):
                    gate = run_gate(result.path, Path(checkpoint or _default_ckpt()), gate_images.paths,
                                    labels=gate_images.labels, crops=kwargs.get("crops", 1),
                                    backend_options=options) if gate_images is not None else None
                if gate is None:  # too few images scored by both (logged by the gate): nothing to judge on
                    c.error = "accuracy gate could not judge: too few validation images scored"
                    continue
                gates[i] = gate
                c.spearman, c.max_delta_share = gate.spearman, gate.max_rel_delta
                # NaN/inf where PyTorch scored is disagreement, whatever the finite scores say
                c.passes = passes(c.spearman, c.max_delta_share) and not gate.nonfinite
                if gate.nonfinite:
                    c.error = f"non-finite scores for {gate.nonfinite} validation images"
                backends[i] = glia_edge.load(result.path, **options)
            size = next(iter(backends.values())).preprocess_config.crop_size if backends else 224
            crops = np.random.default_rng(0).random((batch_size, 3, size, size), dtype=np.float32)
            for i, rate in _time(backends, crops, rounds).items():
                candidates[i].crops_per_s = rate
        finally:
            for backend in backends.values():
                backend.close()
        best = pick(candidates)
        for c in candidates:
            log.info("auto: %-28s %s crops/s, Spearman %s, max |delta| %s of range%s", c.name, _f(c.crops_per_s),
                     _f(c.spearman, 4), _f(c.max_delta_share, 4), " (within the bound)" if c.passes else "")
        if best is None:
            failed = [c for c in candidates if c.error and c.spearman is None]
            if len(failed) == len(candidates):  # nothing was measured: the real reason, not the bound
                raise AccuracyGateError(f"--precision auto: no {target} candidate could be measured; "
                                        f"{failed[0].name}: {failed[0].error}")
            raise AccuracyGateError(f"--precision auto: no {target} candidate met {bound_text()}")
        chosen = exported[best.precision]
        record = {"candidates": [asdict(c) for c in candidates], "picked": best.name, "bound": bound_text(),
                  "rounds": rounds, "batch": batch_size, "machine": _machine()}
        picked_gate = gates[next(i for i, c in enumerate(candidates) if c is best)]
        base = with_gate(chosen.meta, picked_gate, val=kwargs.get("val"), calib=kwargs.get("calib"))
        meta = replace(base, export={**base.export, "auto": record,
                                             **({"inference_precision": best.inference_precision}
                                                if best.inference_precision else {})})
        rewrite_meta(chosen.path, meta)
        source = chosen.path if target == "onnx" else chosen.path.parent
        replace_path(source, final)
    path = final if target == "onnx" else final / chosen.path.name
    notes = (f"--precision auto picked {best.name}: {_f(best.crops_per_s)} crops/s on this machine; {bound_text()}",)
    return replace(chosen, path=path, meta=meta, gate_report=picked_gate, notes=chosen.notes + notes,
                   files=(final,) if target == "onnx" else tuple(sorted(final.iterdir())))


def _default_float(meta: Any) -> str | None:
    """The float precision an OpenVINO artifact runs at by default on this machine (the hint resolved:
    ``bf16-if-supported`` is ``bf16`` or ``fp32`` here); None for other formats."""
    if meta.format != "openvino":
        return None
    from glia_edge.ov_core import shared_core
    from glia_edge.runtimes.openvino import _default_hint

    return _default_hint(meta, shared_core(), "CPU")


def _gate_images(kwargs: dict[str, Any]) -> Any:
    """The images that gate every candidate: ``val``, else the seeded calibration subset each export
    calibrates and gates on (:meth:`CalibrationSet.from_path`); None without either."""
    from glia_edge.export.calibration import DEFAULT_CALIB_SIZE, read_image_list

    if kwargs.get("val"):
        return read_image_list(kwargs["val"])
    if kwargs.get("calib"):
        return read_image_list(kwargs["calib"]).subset(kwargs.get("calib_size", DEFAULT_CALIB_SIZE))
    return None


def _default_ckpt() -> Path:
    from glia_edge.weights import default_checkpoint

    return default_checkpoint()


def _machine() -> str:
    try:
        from glia_edge.benchmarks.machine import machine_info, machine_line

        return machine_line(machine_info())
    except Exception:  # the benchmark extras (psutil, cpuinfo) are optional
        import platform

        return platform.processor() or platform.machine()


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
