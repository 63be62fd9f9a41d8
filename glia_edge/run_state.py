"""A training run's folder and state: what defines a run, the checks ``--resume`` makes, and
one training at a time per folder.

``run_protocol`` is a run's config without its runtime settings, paths made absolute, as plain
data: ``last.state.pt`` and ``reproduce``'s ``done.json`` record it, and a resume (or a rerun of
``reproduce``) that changes what a run trains on or what it trains is refused. The training state
is the commit point of every epoch's save and holds the trained weights of ``last`` and ``best``,
so a save cut short is put back in step from it (:func:`sync_checkpoints`). :func:`run_lock`
holds ``.lock`` in the run folder while a training writes it, and removes it after.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs into one folder are not detected
    fcntl = None  # type: ignore[assignment]

import torch

from glia_edge.data.splits import read_splits, split_parts
from glia_edge.distributed import DistContext
from glia_edge.errors import CheckpointError, OutputError
from glia_edge.models import GLIA
from glia_edge.models.backbone import looks_like_path
from glia_edge.train_config import TrainConfig

log = logging.getLogger(__name__)

STATE_SUFFIX = ".state.pt"
#: Held (``flock``) by the training that writes a run folder, so a second one refuses instead of mixing outputs.
LOCK_NAME = ".lock"
#: Settings that say what a run trains on and what it trains: a resume that changes one is refused
#: (a changed split, seed or annotation would put training images into the new test part).
IDENTITY_KEYS = ("dataset", "root", "csv", "split", "split_source", "seed", "limit", "dataset_options", "preset",
                 "backbone_weights", "local_weights", "model_overrides", "short_side")
#: Recipe settings a resume may change, with a warning: the result no longer follows one recipe.
RECIPE_KEYS = ("lr", "weight_decay", "batch_size", "crops_per_image", "eval_crops", "l1_weight", "rank_weight",
               "cross_rank_weight", "ladder_repeats", "amp")
#: Settings that change nothing a run learns (where and how fast it runs).
_RUNTIME_KEYS = ("device", "workers", "progress", "resume", "output", "max_steps", "overwrite")
#: The files of a run in its folder: a new run into a folder holding any of them would replace it.
RUN_FILES = ("last.safetensors", "last.json", "last.state.pt", "best.safetensors", "best.json", "metrics.jsonl",
             "metrics.csv")


def run_files(out: Path) -> list[Path]:
    """The files of an earlier run in ``out`` (empty when it holds none)."""
    return [out / name for name in RUN_FILES if (out / name).is_file()]


def check_output_free(out: Path, cfg: TrainConfig) -> None:
    """Refuse a new (not resumed) run into a folder that holds a run, unless ``cfg.overwrite``:
    one mistyped ``-o`` must not replace a finished run."""
    found = run_files(out) if out.is_dir() else []
    if found and not cfg.overwrite:
        raise OutputError(f"{out}: holds an earlier run ({found[0].name}); --resume {out} continues it, "
                          "--overwrite replaces it (once the new run saves its first epoch), or use another --output")


def remove_run_files(out: Path) -> None:
    """Remove an earlier run's files at the new run's first commit (its ``splits.json`` is then
    replaced by the new run's copy, not removed: it may be the very file the new run reads)."""
    for path in run_files(out):
        path.unlink(missing_ok=True)


def state_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + STATE_SUFFIX)


def resolve_resume(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "last.safetensors"
    if not p.is_file():
        raise CheckpointError(f"nothing to resume: {p} not found")
    if not state_path(p).is_file():
        raise CheckpointError(f"{p} has no training state beside it ({state_path(p).name}); only 'last' resumes")
    return p


def _resolved(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def run_protocol(cfg: TrainConfig) -> dict[str, Any]:
    """What defines a run, as plain comparable data: the config without the runtime settings, file
    paths made absolute (so a run started from another folder compares equal) and tuples as lists
    (as a JSON file holds them)."""
    data = {k: v for k, v in asdict(cfg).items() if k not in _RUNTIME_KEYS}
    for key in ("root", "csv", "splits_file"):
        if data.get(key):
            data[key] = _resolved(data[key])
    for key in ("backbone_weights", "local_weights"):
        if overrides_path(data[key]):
            data[key] = _resolved(data[key])
    return json.loads(json.dumps(data, default=str))


def saved_protocol(saved: dict[str, Any]) -> dict[str, Any] | None:
    """The protocol a training state records; states written before it was stored give it from
    their config (paths then resolve against the current folder: the best that can be done)."""
    if saved.get("protocol") is not None:
        return saved["protocol"]
    config = saved.get("config")
    if not isinstance(config, dict):
        return None
    known = {f.name for f in fields(TrainConfig)}
    return run_protocol(TrainConfig(**{k: v for k, v in config.items() if k in known}))


def load_state(path: Path) -> dict[str, Any]:
    """A run's training state (``last.state.pt``); a corrupt file is a :class:`CheckpointError`."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a damaged file
        raise CheckpointError(f"{path}: not a readable training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(saved, dict) or "epoch" not in saved:
        raise CheckpointError(f"{path}: not a glia-edge training state")
    return saved


def protocol_differences(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """``key old -> new`` for each of ``keys`` that differs (keys the old record lacks are skipped)."""
    return [f"{k} {old[k]!r} -> {new.get(k)!r}" for k in keys if k in old and old[k] != new.get(k)]


def check_resume_config(path: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse a resume that changes what the run trains on or what it trains; warn on recipe changes."""
    old = saved_protocol(saved)
    if old is None:
        log.warning("%s records no config: the resumed settings cannot be checked against the run's", path)
        return
    new = run_protocol(cfg)
    changed = protocol_differences(old, new, IDENTITY_KEYS)
    if changed:
        raise CheckpointError(f"--resume {path.parent}: the run was trained with other settings "
                              f"({'; '.join(changed)}); resuming would mix two runs. Resume with the run's "
                              "settings, or start a new run with another --output")
    recipe = protocol_differences(old, new, RECIPE_KEYS)
    if recipe:
        log.warning("--resume %s: recipe changed (%s); the resumed run no longer follows one recipe",
                    path.parent, "; ".join(recipe))
    if cfg.epochs < saved["epoch"]:
        log.warning("--resume %s: the run has %d epochs already, more than --epochs %d: nothing left to train",
                    path.parent, saved["epoch"], cfg.epochs)
    elif "epochs" in old and cfg.epochs != old["epochs"]:
        log.info("--resume %s: %d -> %d epochs; the cosine schedule is stretched from here", path.parent,
                 old["epochs"], cfg.epochs)
    old_steps = (saved.get("config") or {}).get("max_steps", cfg.max_steps)
    if old_steps != cfg.max_steps:  # a runtime key (not in the protocol), but it sets the schedule's length
        log.info("--resume %s: --max-steps %s -> %s; the cosine schedule's length changes from here",
                 path.parent, old_steps, cfg.max_steps)


def check_resume_split(run_splits: Path, splits_path: Path, cfg: TrainConfig) -> None:
    """The split a resumed run reads now must be the one it trained on (the run folder keeps a copy)."""
    if not run_splits.is_file() or run_splits.resolve() == splits_path.resolve():
        return
    if split_parts(read_splits(run_splits), cfg.split) != split_parts(read_splits(splits_path), cfg.split):
        raise CheckpointError(f"--resume: split {cfg.split} of {splits_path} is not the split the run trained on "
                              f"({run_splits}); resuming would put its training images into the test part")


def _checkpoint_position(path: Path) -> tuple[Any, Any] | None:
    """(epoch, step) a checkpoint was written at; None when it is missing or unreadable."""
    from glia_edge.checkpoint import read_checkpoint_meta

    try:
        training = read_checkpoint_meta(path).training
    except CheckpointError:
        return None
    return training.get("epoch"), training.get("step")


def load_weights(model: GLIA, weights: dict[str, torch.Tensor], source: Path) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    lost = [k for k in missing if k in model.trainable_state_dict()]
    if lost or unexpected:
        raise CheckpointError(f"{source} does not fit this model (missing {lost[:3]}, unexpected {unexpected[:3]})")


def sync_checkpoints(out: Path, model: GLIA, saved: dict[str, Any]) -> None:
    """Make ``best`` and ``last`` in ``out`` hold what the training state says. A save cut short
    leaves ``best`` one epoch ahead, or ``last`` one epoch ahead of the state (the commit point);
    both are written again from the weights the state holds. Leaves the model at ``last``."""
    from glia_edge.checkpoint import save_checkpoint
    from glia_edge.meta import ArtifactMeta

    for name, weights, meta in (("best", saved.get("best_weights"), saved.get("best_meta")),
                                ("last", saved["weights"], saved.get("meta"))):
        if weights is None or meta is None:
            continue
        target = out / f"{name}.safetensors"
        want = (meta["training"].get("epoch"), meta["training"].get("step"))
        held = _checkpoint_position(target)
        if held == want:
            continue
        if held is None and not target.exists():  # a resume into another --output: nothing was cut short
            log.info("%s: written from the training state (epoch %s)", target, want[0])
        else:
            log.warning("%s holds epoch %s, but the training state says epoch %s (a save was cut short): "
                        "written again from the state", target, held[0] if held else "none", want[0])
        model.load_state_dict(weights, strict=False)
        save_checkpoint(target, model, ArtifactMeta.from_dict(meta))
    model.load_state_dict(saved["weights"], strict=False)


def check_legacy_checkpoints(path: Path, model: GLIA, saved: dict[str, Any]) -> None:
    """States written before they held the weights: ``last`` must be at the state's epoch; a ``best``
    the interrupted save did not write is copied from ``last`` when ``last`` is the best epoch."""
    from glia_edge.checkpoint import read_checkpoint_meta, save_checkpoint

    held = _checkpoint_position(path)
    if held != (saved["epoch"], saved["step"]):
        raise CheckpointError(f"{path} holds epoch {held[0] if held else 'none'}, but its training state says "
                              f"epoch {saved['epoch']} (a save was cut short) and, written by an older glia-edge, "
                              "holds no weights to repair it from: start the run again")
    best = path.parent / "best.safetensors"
    want = best_epoch(saved["history"])
    have = _checkpoint_position(best)
    if want is None or (have is not None and have[0] == want):
        return
    if want != saved["epoch"]:
        raise CheckpointError(f"{best} does not hold the best epoch ({want}) and the training state has no copy "
                              "of it: start the run again")
    log.warning("%s was not written for epoch %d (a save was cut short): copied from %s", best, want, path)
    save_checkpoint(best, model, read_checkpoint_meta(path))


def overrides_path(value: str) -> bool:
    """Whether a weights setting names a local file (not a timm name, "pretrained" or "none")."""
    source = weights_source(value)
    return bool(source) and source != "pretrained" and looks_like_path(source)


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch ``best`` holds: highest validation SRCC, the earliest on ties (NaN never wins)."""
    def srcc(row: dict[str, Any]) -> float:  # NaN in the state; null (None) where read back from JSON
        value = row.get("val_srcc")
        return math.nan if value is None else float(value)

    scored = [(srcc(r), -r["epoch"]) for r in history if not math.isnan(srcc(r))]
    return -max(scored)[1] if scored else (history[0]["epoch"] if history else None)


@contextmanager
def run_lock(out: Path, ctx: DistContext) -> Iterator[None]:
    """Hold ``out/.lock`` (``flock``) while a training writes ``out``; a second training into the same
    folder refuses with :class:`OutputError`. The kernel drops the lock when the process ends, however
    it ends, so a crashed run never blocks the next. A folder this run created is removed again if
    the run fails before its first checkpoint, so a failure leaves nothing half-written."""
    if not ctx.is_main or fcntl is None:  # rank 0 owns the folder; the other ranks only read
        yield
        return
    created = not out.exists()
    while True:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fh = open(out / LOCK_NAME, "a+")
        except OSError as exc:
            raise OutputError(f"{out}: cannot write the run folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise OutputError(f"{out}: another training is writing to this run folder ({owner}); wait for it "
                              "to end or train into another --output") from None
        try:  # the file may have been removed under us by a run cleaning up: lock the one at the path
            same = os.stat(out / LOCK_NAME).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    finished = False
    try:
        yield
        finished = True
    finally:
        if created and not finished and not (out / "last.safetensors").exists():
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        # Removed while still held, so a run waiting on this file sees another inode and locks afresh.
        (out / LOCK_NAME).unlink(missing_ok=True)
        fh.close()


def weights_source(value: str) -> str | None:
    """A weights setting as a source: None for none/random/empty, else the value (a path or timm name)."""
    return None if value.strip().lower() in ("none", "random", "") else value
