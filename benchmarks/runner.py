"""``glia-edge bench``: export what is needed, measure every configuration in one run, report.

The order of work:

1. the checkpoint (``--model``, a random-weight ``--preset``, or the packaged default model) and
   the input options checked, before any folder is made;
2. the held-out images (``--images``, else a built-in synthetic set), a calibration set that
   shares no photo with them, and the selection set the recommendation is judged on (never the
   reported held-out set: :func:`_selection_set`);
3. artifacts exported into ``OUTPUT/artifacts`` (reused while they match the checkpoint);
4. every backend loaded (load time), and its scores on the held-out images against the
   PyTorch FP32 eager scores (Spearman) and the labels (SRCC/PLCC);
5. latency at batch 1 and throughput at each batch N, all configurations alternating round-robin
   in this one process;
6. on a Jetson, average power per configuration from tegrastats (images per joule);
7. peak RSS of a fresh process per configuration;
8. with ``--profile``, the operator types that dominate each row (:mod:`.profile`);
9. the report, and the regression check (``--min-speedup`` / ``--max-drop``).

Step 5 is followed by scoring the selection set with the rows still running.

A configuration that fails at any step keeps its status text in the report; the others go on.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from glia_edge.benchmarks import accuracy, timing
from glia_edge.benchmarks.checks import check_regressions
from glia_edge.benchmarks.artifacts import prepare_artifacts
from glia_edge.benchmarks.configs import BenchConfig, build_matrix, gpu_tensorrt_available, torch_device
from glia_edge.benchmarks.machine import machine_info, machine_line
from glia_edge.benchmarks.report import BenchReport, BenchRow, delta_share
from glia_edge.errors import CheckpointError, DatasetError, one_line
from glia_edge.formats import artifact_size_mb

log = logging.getLogger(__name__)


@dataclass
class BenchOptions:
    model: Path | None = None
    preset: str | None = None
    targets: tuple[str, ...] = ("torch", "onnx", "openvino", "trt")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8", "bf16")
    batches: tuple[int, ...] = (1, 8)
    crops: int = 1
    threads: int | None = None
    images: Path | None = None
    labels: Path | None = None
    calib: Path | None = None
    calib_size: int | None = None
    export_options: dict[str, Any] = field(default_factory=dict)
    eval_size: int | None = 120
    repeats: int = 20
    warmup: int = 3
    gap_s: float = 0.02
    output: Path = Path("bench-out")
    compile: bool = True
    openvino_modes: tuple[str, ...] = ("latency",)
    openvino_shapes: tuple[str, ...] = ("static",)
    memory: bool = True
    profile: bool = False
    reexport: bool = False
    device: str = "auto"
    power_seconds: float = 5.0
    min_speedup: str | None = None
    max_drop: float | None = None
    command: str = ""


@dataclass
class _Live:
    """A loaded configuration during the run."""

    config: BenchConfig
    row: BenchRow
    backend: Any
    scores: np.ndarray | None = None
    runs: dict[int, Callable[[], Any]] = field(default_factory=dict)


def checkpoint_to_bench(opts: BenchOptions, workdir: Path) -> tuple[Path, str, bool]:
    """(checkpoint, description, random weights?) for ``--model``, ``--preset`` or the default model."""
    if opts.model is not None:
        if not Path(opts.model).is_file():
            raise CheckpointError(f"checkpoint not found: {opts.model}")
        if Path(opts.model).suffix.lower() != ".safetensors":
            raise CheckpointError(f"--model: {opts.model} is not a .safetensors checkpoint (the bench exports "
                                  f"every artifact from a checkpoint; to time an artifact use --end-to-end)")
        return Path(opts.model), Path(opts.model).name, False
    if opts.preset:
        path = workdir / f"{opts.preset}.random.safetensors"
        if not path.is_file():
            _random_checkpoint(opts.preset, path)
        return path, f"{opts.preset} (random weights)", True
    from glia_edge.weights import DEFAULT_MODEL, default_checkpoint

    return default_checkpoint(), DEFAULT_MODEL, False


def check_inputs(opts: BenchOptions) -> None:
    """Every input path option names something that exists (one line naming the option), checked
    before any folder is made."""
    for flag, value in (("--images", opts.images), ("--labels", opts.labels), ("--calib", opts.calib)):
        if value is not None and not Path(value).exists():
            raise DatasetError(f"{flag}: {value} not found")


def resolve_threads(threads: int | None) -> int:
    """``--threads``, or all usable cores when not given."""
    if threads:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _random_checkpoint(preset: str, path: Path) -> None:
    import torch

    from glia_edge.checkpoint import checkpoint_meta, save_checkpoint
    from glia_edge.meta import ScoreSpec
    from glia_edge.models import create_model
    from glia_edge.preprocess import PreprocessConfig

    torch.manual_seed(0)
    model = create_model(preset)
    meta = checkpoint_meta(model, ScoreSpec(), PreprocessConfig(),
                           training={"note": "random weights, made by glia-edge bench for speed measurement"})
    log.info("built a random-weight %s checkpoint at %s", preset, path)
    save_checkpoint(path, model, meta)


def _eval_set(opts: BenchOptions, workdir: Path) -> tuple[accuracy.EvalSet, list[str]]:
    """The held-out images: ``--images``; for the packaged default model, its own held-out set
    (references and three distortion types it never trained on); else the built-in synthetic set."""
    if opts.images is not None:
        return accuracy.load_eval_set(opts.images, opts.labels, opts.eval_size), []
    if opts.model is None and not opts.preset:
        from glia_edge.checkpoint import read_checkpoint_meta
        from glia_edge.weights import default_checkpoint, default_set_csv, default_sets

        test = default_sets()["test"]
        found = accuracy.load_eval_set(default_set_csv("test"), opts.labels, opts.eval_size)
        unseen = read_checkpoint_meta(default_checkpoint()).training.get("held_out_types", [])
        what = (f"the default model's test set: {', '.join(test.photos)} (and grey copies) at every level of "
                f"{len(test.types)} distortion types ({', '.join(unseen)} never trained on)")
        return accuracy.EvalSet(found.paths, found.labels, what), [
            f"test set: {what}; SRCC/PLCC are against distortion-level labels"]
    csv_path = accuracy.builtin_set(workdir / "data", "eval", accuracy.EVAL_PHOTOS)
    found = accuracy.load_eval_set(csv_path, opts.labels, opts.eval_size)
    evalset = accuracy.EvalSet(found.paths, found.labels,
                               f"built-in synthetic distortions of {', '.join(accuracy.EVAL_PHOTOS)}")
    return evalset, ["held-out set: built-in synthetic distortions; SRCC/PLCC are against distortion-level labels"]


def _selection_set(opts: BenchOptions, workdir: Path, calib: Path | None,
                   evalset: accuracy.EvalSet) -> tuple[accuracy.EvalSet, list[str]]:
    """The images the recommendation is judged on, never the reported held-out set, as ``glia-edge
    export --precision auto`` gates on its --val images (default: the calibration images): for the
    packaged default model its validation split; otherwise the INT8 calibration images (``--calib``,
    else the built-in calibration photos). A seeded subset of ``--eval-size`` images."""
    if opts.model is None and not opts.preset:
        from glia_edge.weights import default_set_csv

        found = accuracy.load_eval_set(default_set_csv("validation"), None, opts.eval_size)
        what = f"the default model's validation split ({len(found)} images)"
    else:
        source = calib or opts.calib or accuracy.builtin_set(workdir / "data", "calib", accuracy.CALIB_PHOTOS)
        found = accuracy.load_eval_set(source, None, opts.eval_size)
        what = f"the calibration images {source} ({len(found)} images)"
    selection = accuracy.EvalSet(found.paths, None, what)
    notes: list[str] = []  # the recommendation line itself names the set
    shared = len(set(selection.paths) & set(evalset.paths))
    if shared:
        notes.append(f"the selection set shares {shared} of its {len(selection)} images with the held-out set: "
                     f"the recommendation is not independent of the reported agreement")
    return selection, notes


def _calib_source(opts: BenchOptions, workdir: Path, configs: list[BenchConfig]) -> Path | None:
    """``--calib``; for the default model, the calibration set its own INT8 export uses; else built-in
    photos the held-out set does not use. None when nothing is INT8."""
    if not any(c.precision == "int8" and c.skip is None and c.target != "torch" for c in configs):
        return None
    if opts.calib is not None:
        return Path(opts.calib)
    if opts.model is None and not opts.preset:  # measure the artifact `glia-edge export` makes of it
        from glia_edge.weights import default_calibration

        return default_calibration()
    return accuracy.builtin_set(workdir / "data", "calib", accuracy.CALIB_PHOTOS)


def _load(config: BenchConfig, path: Path, opts: BenchOptions, device: str, max_batch: int) -> tuple[Any, float]:
    from glia_edge.runtimes import load

    start = time.perf_counter()
    backend = load(path, threads=opts.threads, batch_size=max_batch * opts.crops, **config.load_options(device))
    return backend, time.perf_counter() - start


def _open_backends(configs: list[BenchConfig], plan: Any, checkpoint: Path, opts: BenchOptions,
                   device: str) -> tuple[list[BenchRow], list[_Live]]:
    rows: list[BenchRow] = []
    live: list[_Live] = []
    max_batch = max(opts.batches)
    for config in configs:
        row = BenchRow(name=config.name, target=config.target, precision=config.precision,
                       backend=config.label(device if config.target == "torch" else "cpu"))
        rows.append(row)
        if config.skip:
            row.status = config.skip
            continue
        key = (config.target, config.artifact_precision)
        path = checkpoint if config.target == "torch" else plan.paths.get(key)
        row.notes += plan.notes.get(key, [])
        if path is None:
            row.status = plan.errors.get(key, "export failed")
            continue
        row.artifact, row.artifact_mb = str(path), artifact_size_mb(path)
        try:
            backend, row.load_s = _load(config, path, opts, device, max_batch)
        except Exception as exc:  # the report keeps the reason; other rows go on
            row.status = f"load failed: {one_line(exc)}"
            continue
        if config.variant == "compile":
            row.notes.append("load time excludes torch.compile's compilation, which happens in the warm-up")
        live.append(_Live(config, row, backend))
    return rows, live


def _score_all(live: list[_Live], evalset: accuracy.EvalSet, crops: int) -> None:
    from tqdm.auto import tqdm

    for item in tqdm(list(live), desc="scoring held-out images", unit="backend", leave=False):
        try:
            item.scores = item.backend.score_paths(list(evalset.paths), crops=crops)
        except Exception as exc:
            item.row.status = f"scoring failed: {one_line(exc)}"
    _drop_failed(live)
    reference = next((i.scores for i in live if i.config.is_baseline), None)
    for item in live:
        if reference is None or item.scores is None:
            continue
        agree, item.row.srcc, item.row.plcc = accuracy.score_against_reference(item.scores, reference, evalset.labels)
        item.row.spearman, item.row.max_abs_diff = agree.spearman, agree.max_abs_delta
        failed = int(np.isnan(item.scores).sum())
        if failed:
            item.row.notes.append(f"{failed} held-out images could not be scored")


def _score_selection(live: list[_Live], selection: accuracy.EvalSet, crops: int, score_range: float | None) -> None:
    """Agreement with PyTorch FP32 on the selection set, for the rows that ran; a failure is a note."""
    from tqdm.auto import tqdm

    scores: dict[int, np.ndarray] = {}
    for item in tqdm(list(live), desc="scoring the selection set", unit="backend", leave=False):
        try:
            scores[id(item)] = np.asarray(item.backend.score_paths(list(selection.paths), crops=crops))
        except Exception as exc:
            item.row.notes.append(f"selection set not scored: {one_line(exc)}")
    base = next((i for i in live if i.config.is_baseline), None)
    reference = scores.get(id(base)) if base is not None else None
    if reference is None:
        return
    for item in live:
        if id(item) not in scores:
            continue
        agree, _, _ = accuracy.score_against_reference(scores[id(item)], reference)
        item.row.selection_spearman, item.row.selection_max_abs_diff = agree.spearman, agree.max_abs_delta
        item.row.selection_max_delta_share = delta_share(agree.max_abs_delta, score_range)


def _timing_inputs(evalset: accuracy.EvalSet, cfg: Any, batches: tuple[int, ...], crops: int) -> dict[int, np.ndarray]:
    """batch N -> the crops of N held-out images (cycled when there are fewer), float32 NCHW."""
    from glia_edge.preprocess import preprocess

    need = max(batches)
    arrays = [preprocess(evalset.paths[i % len(evalset)], cfg, crops=crops) for i in range(need)]
    return {b: np.ascontiguousarray(np.concatenate(arrays[:b])) for b in batches}


def _measure_speed(live: list[_Live], inputs: dict[int, np.ndarray], opts: BenchOptions, device: str) -> None:
    from tqdm.auto import tqdm

    runs: dict[str, Callable[[], Any]] = {}
    timers: dict[str, timing.Timer] = {}
    owner: dict[str, _Live] = {}
    for item in live:
        timer, kind = timing.timer_for(item.config.target, device if item.config.target == "torch" else "cpu")
        item.row.timer = kind
        for batch, array in inputs.items():
            name = f"{item.row.name}@{batch}"
            runs[name] = item.runs[batch] = _call(item.backend.predict_batch, array)
            timers[name], owner[name] = timer, item

    def failed(name: str, exc: Exception) -> None:
        owner[name].row.status = f"error: {one_line(exc)}"

    with tqdm(total=len(runs) * (opts.repeats + opts.warmup), desc="timing (round-robin)", unit="run",
              leave=False) as bar:
        times = timing.measure_round_robin(runs, repeats=opts.repeats, warmup=opts.warmup, timers=timers,
                                           on_error=failed, progress=bar.update, gap_s=opts.gap_s)
    for name, seconds in times.items():
        item, batch = owner[name], int(name.rsplit("@", 1)[1])
        if not item.row.ok or not seconds:
            continue
        if batch == 1:
            item.row.latency = timing.latency_stats(seconds).to_dict()
        if batch > 1 or len(inputs) == 1:
            item.row.throughput[batch] = timing.throughput(seconds, batch, opts.crops).to_dict()
    _drop_failed(live)


def _drop_failed(live: list[_Live]) -> None:
    """Close and forget the backends whose row failed; the others go on."""
    for item in [i for i in live if not i.row.ok]:
        item.backend.close()
    live[:] = [i for i in live if i.row.ok]


def _call(fn: Callable[[np.ndarray], Any], array: np.ndarray) -> Callable[[], Any]:
    return lambda: fn(array)


def _speedups(rows: list[BenchRow]) -> None:
    """Speed-up in crops/s at the largest measured batch over PyTorch FP32 eager."""
    base = next((r for r in rows if r.target == "torch" and r.precision == "fp32" and r.name.endswith("eager")), None)
    if base is None or not base.throughput:
        return
    batch = max(base.throughput)
    reference = base.crops_per_s(batch)
    for row in rows:
        value = row.crops_per_s(batch)
        if row.ok and value and reference:
            row.speedup = value / reference


def _measure_power(live: list[_Live], opts: BenchOptions) -> str | None:
    """On a Jetson: average power while each configuration runs its largest batch for a while."""
    from glia_edge.benchmarks import tegrastats

    if not tegrastats.available() or not live:
        return None
    batch, rail = max(opts.batches), None
    with tegrastats.TegrastatsSampler(interval_ms=100) as sampler:
        sampler.wait_for_samples(2)
        for item in live:
            run, done = item.runs[batch], 0
            start = time.monotonic()
            while time.monotonic() - start < opts.power_seconds:
                run()
                done += batch
            end = time.monotonic()
            summary = tegrastats.summarize(sampler.window(start, end))
            if summary is not None:
                item.row.power_w = summary.mean_w
                item.row.images_per_joule = summary.images_per_joule(done, end - start)
                item.row.gpu_load, item.row.cpu_load = summary.mean_gpu_load, summary.mean_cpu_load
                item.row.max_temp_c = summary.max_temp_c
                rail = summary.rail
    return f"power: mean of tegrastats rail {rail} while each row ran batch {batch} for " \
           f"{opts.power_seconds:g} s" if rail else None


def _profile_ops(rows: list[BenchRow], configs: list[BenchConfig], opts: BenchOptions) -> None:
    """--profile: which operator types dominate each row (its runtime's own profiler)."""
    from tqdm.auto import tqdm

    from glia_edge.benchmarks.profile import format_profile, profile_artifact

    # One profile per artifact and precision: the plain row's (OpenVINO: latency hint, static shape);
    # torch.compile and OpenVINO's other variants are not profiled.
    todo = [(r, c) for r, c in zip(rows, configs)
            if r.ok and r.artifact and c.target != "trt" and c.variant in ("", "eager", "autocast")]
    for row, config in tqdm(todo, desc="operator profiles", unit="backend", leave=False):
        try:
            ops = profile_artifact(row.artifact, batch=max(opts.batches), crops=opts.crops, threads=opts.threads,
                                   inference_precision=config.load_options().get("inference_precision"))
        except Exception as exc:
            row.notes.append(f"operator profile failed: {one_line(exc)}")
            continue
        row.top_ops = format_profile(ops[:5])


def _measure_memory(rows: list[BenchRow], configs: list[BenchConfig], opts: BenchOptions, evalset: accuracy.EvalSet,
                    device: str) -> None:
    from tqdm.auto import tqdm

    from glia_edge.benchmarks.memory import measure_peak_rss

    images = [str(p) for p in evalset.paths[:max(opts.batches)]]
    todo = [(r, c) for r, c in zip(rows, configs) if r.ok and r.artifact]
    for row, config in tqdm(todo, desc="peak RSS (one process each)", unit="backend", leave=False):
        options = config.load_options(device)
        try:
            result = measure_peak_rss(row.artifact, inference_precision=options.get("inference_precision"),
                                      compile=bool(options.get("compile")), batch=max(opts.batches), crops=opts.crops,
                                      threads=opts.threads, images=images,
                                      device=options.get("device") if config.target == "torch" else None,
                                      backend_options={k: options[k] for k in ("mode", "shapes") if k in options})
        except Exception as exc:
            row.notes.append(f"peak RSS not measured: {one_line(exc)}")
            continue
        row.peak_rss_mb = result.peak_rss_mb


def _measure_loaded(live: list[_Live], rows: list[BenchRow], evalset: accuracy.EvalSet, opts: BenchOptions,
                    device: str, selection: accuracy.EvalSet | None = None,
                    score_range: float | None = None) -> str | None:
    """Accuracy, speed, the selection set's agreement and (on a Jetson) power of the loaded backends;
    closes them. Returns a power note."""
    try:
        _score_all(live, evalset, opts.crops)
        for item in live:
            item.row.max_delta_share = delta_share(item.row.max_abs_diff, score_range)
        if live:
            inputs = _timing_inputs(evalset, live[0].backend.preprocess_config, opts.batches, opts.crops)
            _measure_speed(live, inputs, opts, device)
        _speedups(rows)
        if selection is not None and live:  # only the rows that ran: the recommendation picks among them
            _score_selection(live, selection, opts.crops, score_range)
        return _measure_power(live, opts)
    finally:
        for item in live:
            item.backend.close()


def _settings(opts: BenchOptions, model: str, checkpoint: Path, random_weights: bool, device: str,
              evalset: accuracy.EvalSet, notes: list[str], selection: accuracy.EvalSet,
              score_range: float | None) -> dict[str, Any]:
    if random_weights:
        notes.insert(0, "random-weight model: speed only; Spearman compares backends on the same random model")
    notes.append(f"timing: {opts.warmup} warm-up + {opts.repeats} timed runs per configuration and batch, "
                 f"round-robin; preprocessing (decode, resize, crop) is not timed")
    return {"model": model, "checkpoint": str(checkpoint), "random_weights": random_weights,
            "score_range": score_range, "selection_set": selection.source, "selection_images": len(selection),
            "batches": list(opts.batches), "crops": opts.crops, "threads": opts.threads, "repeats": opts.repeats,
            "device": device, "eval_set": evalset.source, "eval_images": len(evalset),
            "labelled": evalset.labels is not None, "notes": notes,
            "checked": bool(opts.min_speedup or opts.max_drop is not None)}


def run_benchmark(opts: BenchOptions) -> BenchReport:
    """Run the whole benchmark and return its report (not yet written)."""
    from glia_edge.formats import read_meta

    out = Path(opts.output)
    workdir = out / "artifacts"
    device = torch_device(opts.device)  # like the checkpoint and the inputs, checked before anything is written
    check_inputs(opts)
    if opts.images is not None:  # read (and refused when empty) before any folder is made
        evalset, notes = _eval_set(opts, out)
    checkpoint, model_name, random_weights = checkpoint_to_bench(opts, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    opts.threads = resolve_threads(opts.threads)
    configs = build_matrix(opts.targets, opts.precisions, gpu_tensorrt=gpu_tensorrt_available(),
                           compile=opts.compile, openvino_modes=opts.openvino_modes,
                           openvino_shapes=opts.openvino_shapes)
    if opts.images is None:
        evalset, notes = _eval_set(opts, out)
    calib = _calib_source(opts, out, configs)
    selection, selection_notes = _selection_set(opts, out, calib, evalset)
    notes += selection_notes
    score_range = read_meta(checkpoint).score_spec.range
    if calib is not None:
        notes.append(f"INT8 calibration images: {calib}")
    if opts.export_options:
        notes.append(f"export options: {opts.export_options}")
    plan = prepare_artifacts(checkpoint, configs, workdir, calib=calib, crops=opts.crops, max_batch=max(opts.batches),
                             calib_size=opts.calib_size, export_options=opts.export_options, reuse=not opts.reexport)
    rows, live = _open_backends(configs, plan, checkpoint, opts, device)
    power_note = _measure_loaded(live, rows, evalset, opts, device, selection, score_range)
    if power_note:
        notes.append(power_note)
    if opts.memory:  # after the timing, with every backend closed: one quiet process at a time
        _measure_memory(rows, configs, opts, evalset, device)
    if opts.profile:
        _profile_ops(rows, configs, opts)
    info = machine_info()
    report = BenchReport(rows=rows, machine=info, machine_line=machine_line(info), command=opts.command,
                         settings=_settings(opts, model_name, checkpoint, random_weights, device, evalset, notes,
                                            selection, score_range),
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    report.checks = check_regressions(rows, configs, opts.min_speedup, opts.max_drop)
    return report
