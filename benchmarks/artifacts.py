"""The artifacts a benchmark's rows need: exported once into ``OUTPUT/artifacts`` with
:func:`glia_edge.export.export`, and reused by later runs while their metadata names the same
source checkpoint (SHA-256), precision and export settings (crops, batch, calibration source and
how many calibration images were listed, so ``--calib-size`` counts). A failed export is recorded for its
rows (their status), never allowed to stop the others.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from glia_edge.benchmarks.configs import PRECISIONS, BenchConfig
from glia_edge.errors import one_line
from glia_edge.formats import FORMATS, loadable_path

log = logging.getLogger(__name__)


@dataclass
class ArtifactPlan:
    """Where each (target, precision) artifact lives, or why it could not be made."""

    paths: dict[tuple[str, str], Path] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: dict[tuple[str, str], list[str]] = field(default_factory=dict)


def _reusable(path: Path, checkpoint_sha: str, precision: str, settings: dict[str, Any]) -> bool:
    """An artifact from an earlier run is reused only when made from the same checkpoint, at the
    same precision, with the same export settings (crops, batch, calibration source and the number
    of calibration images listed: those used plus those skipped as unreadable)."""
    if not path.exists():
        return False
    try:
        from glia_edge.runtimes import read_meta

        meta = read_meta(path)
    except Exception as exc:  # an unreadable leftover is re-exported, not trusted
        log.debug("not reusing %s: %s", path, exc)
        return False
    calibration = meta.export.get("calibration") or {}
    listed = (calibration.get("images") or 0) + (calibration.get("skipped") or 0) if calibration.get("source") else None
    found = {"crops": meta.export.get("crops"), "batch": meta.export.get("batch"),
             "calibration": calibration.get("source"), "calib_images": listed}
    return meta.source_checkpoint_sha256 == checkpoint_sha and meta.precision == precision and found == settings


def artifact_output(artifacts_dir: Path, stem: str, target: str, precision: str) -> Path:
    """The ``output`` given to export: for a single-file format the file ``STEM.PRECISION<first suffix>``
    (``.onnx``), else a folder ``STEM.PRECISION.TARGET``."""
    fmt = FORMATS[target]
    return artifacts_dir / (f"{stem}.{precision}{fmt.suffixes[0]}" if fmt.single_file else f"{stem}.{precision}.{target}")


def _export_one(checkpoint: Path, target: str, precision: str, output: Path, calib: Path | None, crops: int,
                max_batch: int, calib_size: int | None, options: dict[str, Any],
                export_fn: Callable[..., Any] | None) -> tuple[Path, list[str]]:
    from glia_edge.export.options import option_applies

    if export_fn is None:
        from glia_edge.export import export as export_fn
    log.info("exporting %s %s -> %s", target, precision, output)
    # One --export-option serves every row; each export gets the ones it reads (the others it refuses).
    extra = {**{k: v for k, v in options.items() if option_applies(k, target, precision)},
             **({"calib_size": calib_size} if calib_size else {})}
    result = export_fn(checkpoint, target=target, precision=precision,
                       calib=str(calib) if precision == "int8" and calib else None, output=output, crops=crops,
                       batch=max_batch * crops, **extra)
    # Export notes are about its own accuracy gate, which the benchmark replaces; TensorRT's say
    # why no engine was built.
    notes = [str(n) for n in (getattr(result, "notes", None) or [])] if target == "trt" else []
    path = Path(result.path)
    if path.suffix not in FORMATS[target].suffixes:
        # No engine could be built here: never time the ONNX stand-in under a TensorRT label.
        raise RuntimeError(notes[0] if notes else f"no TensorRT engine was built ({path})")
    return path, notes


def prepare_artifacts(checkpoint: Path, configs: Sequence[BenchConfig], artifacts_dir: Path, *,
                      calib: Path | None, crops: int, max_batch: int, calib_size: int | None = None,
                      export_options: dict[str, Any] | None = None, reuse: bool = True,
                      export_fn: Callable[..., Any] | None = None) -> ArtifactPlan:
    """Export (or reuse) every artifact the runnable configurations need; failures are recorded.

    ``calib_size`` caps the INT8 calibration images (export's default when None).
    ``export_options`` go to every export (e.g. ``keep_head_float``, ``smooth_quant_alpha``,
    ``exclude_nodes``: mixed-precision INT8); their artifacts get a name of their own.
    ``reuse=False`` exports everything again (metadata cannot tell that the exporter changed).
    """
    from glia_edge.meta import sha256_file

    plan = ArtifactPlan()
    checkpoint_sha = sha256_file(checkpoint)
    options = dict(export_options or {})
    stem = checkpoint.stem + (f"-{_options_tag(options)}" if options else "")
    needed = sorted({(c.target, c.artifact_precision) for c in configs if c.skip is None and c.target != "torch"},
                    key=lambda tp: (list(FORMATS).index(tp[0]), PRECISIONS.index(tp[1])))
    for target, precision in needed:
        output = artifact_output(artifacts_dir, stem, target, precision)
        path = loadable_path(output, target)
        int8 = precision == "int8" and calib is not None
        settings = {"crops": crops, "batch": max_batch * crops, "calibration": str(calib) if int8 else None,
                    "calib_images": _calib_count(calib, calib_size) if int8 else None}
        if reuse and _reusable(path, checkpoint_sha, precision, settings):
            log.info("reusing %s", path)
            plan.paths[(target, precision)] = path
            continue
        try:
            plan.paths[(target, precision)], plan.notes[(target, precision)] = _export_one(
                checkpoint, target, precision, output, calib, crops, max_batch, calib_size, options, export_fn)
        except Exception as exc:  # one failed export must not stop the other rows
            log.warning("export %s %s failed: %s", target, precision, exc)
            plan.errors[(target, precision)] = f"export failed: {one_line(exc)}"
    return plan


def _calib_count(calib: Path | None, calib_size: int | None) -> int | None:
    """How many calibration images an export of ``calib`` with ``calib_size`` lists (the seeded subset
    :meth:`CalibrationSet.from_path` takes); None when the source cannot be read (never reused)."""
    from glia_edge.export.calibration import DEFAULT_CALIB_SIZE, read_image_list

    try:
        return len(read_image_list(calib).subset(calib_size or DEFAULT_CALIB_SIZE).paths)
    except Exception as exc:  # the export itself reports why; nothing is reused meanwhile
        log.debug("calibration source %s unreadable: %s", calib, exc)
        return None


def _options_tag(options: dict[str, Any]) -> str:
    """A short stable name for a set of export options (artifact file names)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
