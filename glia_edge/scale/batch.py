"""Batch scoring on Ray Data: decode as tasks, score in an actor pool, commit rows resumably.

The pipeline is ``from_items(sources) -> map_batches(decode_batch) [tasks] ->
map_batches(BatchScorer) [actor pool] -> driver``. Decode tasks read each source (local disk or a
pyarrow filesystem), decode it and resize it to the model's short side; each actor holds one
``glia_edge.load()`` backend, built from the artifact bytes shipped through the object store, and
scores the decoded images with :meth:`Backend.iter_scores`, so scores equal ``glia-edge score``'s.
A bad input becomes a row with its error and the job goes on. The driver streams rows into a
:class:`ResultStore` (exactly once, resumable) behind a progress bar.

Fault tolerance is explicit: actors are restarted up to ``max_restarts`` times and the batch an
actor was working on when it died is retried up to ``task_retries`` times (Ray's own actor
restart and task retry); decode tasks are retried up to ``task_retries`` times when their worker
dies.
"""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.runtimes.base import thread_option
from glia_edge.scale.artifact import ArtifactBundle, read_artifact_meta
from glia_edge.scale.cluster import ResourcePlan, cluster_cpus, plan_resources, quiet_ray_data
from glia_edge.scale.output import ResultStore

log = logging.getLogger(__name__)


@dataclass
class BatchConfig:
    """Everything a batch job needs besides the inputs; CLI options map onto these fields."""

    output: Path
    fmt: str
    model: Path | None = None
    crops: int | None = None
    max_pixels: int | None = None
    actors: int | None = None
    threads: int | None = None
    batch_size: int = 8
    precision: str | None = None
    rows_per_task: int = 32
    commit_rows: int = 1000
    commit_seconds: float = 30.0
    max_restarts: int = 3
    task_retries: int = 3
    overwrite: bool = False
    progress: bool = True
    backend_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchSummary:
    total: int
    scored_now: int
    skipped: int
    failed: int
    output: Path
    plan: ResourcePlan | None
    seconds: float


def decode_batch(batch: dict[str, np.ndarray], *, preprocess: dict[str, Any], crops: int | None) -> dict[str, np.ndarray]:
    """Ray task body: each source's uint8 crops, as ``glia-edge score`` cuts them; failures carry
    their reason in ``error``."""
    from glia_edge.errors import ImageLoadError
    from glia_edge.preprocess import PreprocessConfig, allow_pillow_pixels
    from glia_edge.scale.inputs import load_source

    cfg = PreprocessConfig.from_dict(preprocess)
    allow_pillow_pixels(cfg.max_pixels)  # this worker decodes for this job only: --max-pixels governs, as in score
    pixels: list[bytes] = []
    counts: list[int] = []
    errors: list[str] = []
    for source in batch["path"]:
        try:
            cut = load_source(str(source), cfg, crops)
        except ImageLoadError as exc:
            pixels.append(b"")
            counts.append(0)
            errors.append(exc.reason)
            continue
        pixels.append(cut.tobytes())
        counts.append(len(cut))
        errors.append("")
    return {"path": batch["path"], "pixels": np.array(pixels, dtype=object),
            "n_crops": np.array(counts, np.int32), "error": np.array(errors, dtype=object)}


class BatchScorer:
    """Ray Data actor: one backend per actor, loaded once from the shipped artifact."""

    def __init__(self, bundle_box: list[Any], options: dict[str, Any], crops: int | None) -> None:
        import ray

        import glia_edge

        bundle: ArtifactBundle = ray.get(bundle_box[0])
        self.backend = glia_edge.load(bundle.materialize(), **options)
        self.crops = crops
        self.model = bundle.name
        self.sha256 = bundle.sha256
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from glia_edge.preprocess import crops_to_float

        n = len(batch["path"])
        scores = np.full(n, np.nan)
        crops = np.zeros(n, np.int32)
        errors = [str(e) for e in batch["error"]]
        ok = [i for i in range(n) if not errors[i]]
        size = self.backend.preprocess_config.crop_size
        cut = [np.frombuffer(batch["pixels"][i], np.uint8).reshape(int(batch["n_crops"][i]), size, size, 3)
               for i in ok]
        # The decode tasks already cut the crops: only step 5 (to float) is left, on this thread.
        results = self.backend.iter_scores(cut, crops=self.crops, cut=crops_to_float, decode_workers=0)
        for i, res in zip(ok, results):
            if res.ok:
                scores[i], crops[i] = res.score, res.crops
            else:
                errors[i] = res.error or "unknown error"
        meta = self.backend.meta
        return {"path": batch["path"], "score": scores, "crops": crops, "error": np.array(errors, dtype=object),
                "format": np.array([meta.format] * n, dtype=object),
                "precision": np.array([meta.precision] * n, dtype=object),
                "node": np.array([self.node] * n, dtype=object), "worker_pid": np.full(n, self.pid, np.int64)}


def _rows(table: Any, bundle: ArtifactBundle) -> list[dict[str, Any]]:
    out = []
    for r in table.to_pylist():
        error = r["error"] or ""
        out.append({"path": r["path"], "score": None if error or r["score"] is None or math.isnan(r["score"])
                    else float(r["score"]), "crops": int(r["crops"]), "status": "error" if error else "ok",
                    "error": error, "model": bundle.name, "artifact_sha256": bundle.sha256, "format": r["format"],
                    "precision": r["precision"], "node": r["node"], "worker_pid": int(r["worker_pid"])})
    return out


def _job_settings(bundle: ArtifactBundle, cfg: BatchConfig) -> dict[str, Any]:
    return {"artifact_sha256": bundle.sha256, "model": bundle.name, "crops": cfg.crops,
            "max_pixels": cfg.max_pixels, "precision_option": cfg.precision}


def _build_dataset(todo: list[str], bundle_ref: Any, meta: Any, cfg: BatchConfig, plan: ResourcePlan) -> Any:
    import ray.data
    from ray.data import ActorPoolStrategy

    preprocess = meta.preprocess_config
    if cfg.max_pixels:
        preprocess = preprocess.replace(max_pixels=cfg.max_pixels)
    # Scale-out's CPU plan sets threads where the backend has them (a TensorRT engine has none).
    options = {"batch_size": cfg.batch_size, **thread_option(meta.format, plan.threads), **cfg.backend_options}
    if cfg.precision:
        options["precision"] = cfg.precision
    # Small jobs get smaller blocks, so every actor of the pool has work.
    per_task = max(1, min(cfg.rows_per_task, math.ceil(len(todo) / plan.actors)))
    ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=math.ceil(len(todo) / per_task))
    # Ray warns that extra remote arguments (here the retry and restart counts) will become named
    # parameters of map_batches; it has none for them yet, so that one warning is silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        ds = ds.map_batches(decode_batch, fn_kwargs={"preprocess": preprocess.to_dict(), "crops": cfg.crops},
                            batch_size=per_task, num_cpus=plan.decode_cpus, max_retries=cfg.task_retries)
        ds = ds.map_batches(BatchScorer, fn_constructor_kwargs={"bundle_box": [bundle_ref], "options": options,
                                                                "crops": cfg.crops},
                            compute=ActorPoolStrategy(size=plan.actors), num_cpus=plan.actor_cpus,
                            batch_size=per_task, max_restarts=cfg.max_restarts,
                            max_task_retries=cfg.task_retries)
    return ds


def run_batch(sources: list[str], problems: dict[str, str], cfg: BatchConfig) -> BatchSummary:
    """Score ``sources`` on the connected Ray cluster into ``cfg.output``; resumes an interrupted run.
    ``problems`` (those of ``sources`` that cannot be read -> the reason: a glob matching nothing, a
    folder that cannot be listed) become error rows in their place."""
    import ray
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    started = time.perf_counter()
    if cfg.model is None:  # the packaged model, on the runtime `glia-edge score` picks here
        from glia_edge.scale.artifact import default_model

        path, pick = default_model(cfg.precision)
        cfg = replace(cfg, model=path, backend_options={**cfg.backend_options, **pick})
    model_path = cfg.model
    bundle = ArtifactBundle.from_path(model_path)
    meta = read_artifact_meta(Path(model_path))
    store = ResultStore(cfg.output, cfg.fmt, _job_settings(bundle, cfg))
    done = store.open(overwrite=cfg.overwrite)
    missing = [p for p in problems if p not in done]
    store.commit([{"path": p, "score": None, "crops": 0, "status": "error", "error": problems[p], "model": bundle.name,
                   "artifact_sha256": bundle.sha256, "format": meta.format, "precision": meta.precision,
                   "node": "", "worker_pid": 0} for p in missing])
    todo = [p for p in sources if p not in done and p not in problems]
    plan = None
    if todo:
        quiet_ray_data()
        plan = plan_resources(cluster_cpus(), cfg.actors, cfg.threads)
        log.info("scoring %d inputs (%d already done) with %s: %s", len(todo), len(done), bundle.name,
                 plan.describe())
        bundle_ref = ray.put(bundle)
        ds = _build_dataset(todo, bundle_ref, meta, cfg, plan)
        buffer: list[dict[str, Any]] = []
        last_commit = time.monotonic()
        columns = (TextColumn("scoring on Ray"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        console = Console(stderr=True)
        with Progress(*columns, console=console, transient=True,
                      disable=not (cfg.progress and console.is_terminal)) as progress:
            task = progress.add_task("score", total=len(todo))
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows = _rows(table, bundle)
                for r in rows:
                    if r["error"]:
                        progress.console.print(f"error: {r['path']}: {r['error']}", style="red", markup=False,
                                               highlight=False, soft_wrap=True)
                buffer.extend(rows)
                progress.advance(task, len(rows))
                if len(buffer) >= cfg.commit_rows or time.monotonic() - last_commit >= cfg.commit_seconds:
                    store.commit(buffer)
                    buffer, last_commit = [], time.monotonic()
            store.commit(buffer)
        del bundle_ref
    merged = store.finalize(sources)
    failed = sum(s != "ok" for s in merged.column("status").to_pylist())
    return BatchSummary(total=merged.num_rows, scored_now=len(todo), skipped=len(done), failed=failed,
                        output=cfg.output, plan=plan, seconds=time.perf_counter() - started)
