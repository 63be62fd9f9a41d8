"""Training GLIA on an IQA set with LoDa's protocol (Xu et al., CVPR 2024), so numbers compare.

Defaults: AdamW (lr 3e-4, weight decay 1e-2) on the adapter/local-stream/head parameters only
(the backbone is frozen), cosine decay over all steps, 10 epochs, batch 128, 3 random crops per
image per epoch (5 on LIVE Challenge) with h/v flips, seed 3407, loss = PLCC-induced + 0.1 L1 on
scores standardised by the training split (``rank_weight > 0`` on a graded synthetic set: batches of
ladders plus a within-ladder ranking loss, see ``glia_edge.losses``). After every epoch the model
is scored on the split's *validation* part (carved from its training part, see
``glia_edge.data.splits``) with the evaluation-crop protocol (LoDa's 15 seeded random crops by
default); ``best`` is the epoch with the highest validation SRCC. The test part is never loaded
here: ``glia-edge eval`` or ``glia-edge reproduce`` score it afterwards, at the selected and at
the last epoch. ``last`` and ``best`` checkpoints are written with the full config and the split
sizes, the score scale folded into the model so it outputs MOS directly. The learning rate is a
pure function of the step (cosine to 0 over the run's steps): a resumed run follows the same
schedule without stored scheduler state, and one resumed with more epochs stretches it. Optimizer
and random-stream state sit beside ``last`` in ``last.state.pt`` for ``--resume``, with the
trained weights of ``last`` and ``best``: each epoch writes ``best``, then ``last``, then the state,
the commit point, so a save cut short is repaired from it on resume. A resume that changes the
data, split, seed or model is refused (recipe changes are warned about). One training at a time
writes a run folder (``.lock``), and a new run into a folder holding a run is refused unless
``overwrite`` (``--overwrite``): the old run's files are then replaced at the new run's first
commit, so a run that fails before it leaves the old one whole. Under torchrun the same code runs DDP.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from glia_edge.data.torch_dataset import LadderCrops, collate_skip_failed
from glia_edge.distributed import DistContext, resolve_device
from glia_edge.errors import (BackboneWeightsError, BackendUnavailableError, CheckpointError, DatasetError,
                              TrainingError)
from glia_edge.losses import IQALoss
from glia_edge.models import GLIA, GliaConfig, create_model
from glia_edge.models.glia import ResNetLocalStream
from glia_edge.run_state import (best_epoch, check_legacy_checkpoints, check_output_free, check_resume_config,
                                 check_resume_split, load_state, load_weights, overrides_path, remove_run_files,
                                 resolve_resume, run_files, run_lock, run_protocol, state_path, sync_checkpoints,
                                 weights_source)
from glia_edge.train_config import TrainConfig
from glia_edge.train_data import SPLITS_COPY, TrainData, copy_splits, prepare_data, predict_records

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output: Path
    last: Path
    best: Path
    history: list[dict[str, Any]]
    model: GLIA


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    step: int = 0
    best: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    #: What ``best.safetensors`` holds (epoch, trainable weights, metadata), kept so a save cut
    #: short can be repaired from the training state alone.
    best_epoch: int | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    best_meta: dict[str, Any] | None = None


class _Standardised(nn.Module):
    """The model's standardised-score forward as ``forward``, so DDP's hooks see it."""

    def __init__(self, model: GLIA) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_standardised(x)


class MetricsLog:
    """Per-epoch metrics as JSON lines and a CSV in the output folder, both rewritten (atomically)
    from this run's history at every epoch: they never mix in an earlier run's rows, and nothing
    is written before the run's first commit (an earlier run replaced with --overwrite stays
    whole until then)."""

    def __init__(self, folder: Path, history: list[dict[str, Any]]) -> None:
        self.folder, self.rows = folder, list(history)
        if self.rows:  # a resume: rows written after the state's commit point are dropped now
            self._flush()

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._flush()

    def _flush(self) -> None:
        import csv

        from glia_edge.atomic import atomic_write

        atomic_write(self.folder / "metrics.jsonl",
                     lambda tmp: tmp.write_text("".join(json_line(r) + "\n" for r in self.rows)))
        columns = list(dict.fromkeys(k for r in self.rows for k in r))

        def write_csv(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

        atomic_write(self.folder / "metrics.csv", write_csv)


def json_line(row: dict[str, Any]) -> str:
    """One metrics row as a JSON line (an undefined metric as null, not a bare NaN)."""
    from glia_edge.meta import dumps_json

    return dumps_json(row)


def default_output(cfg: TrainConfig) -> Path:
    return Path("runs") / cfg.dataset / cfg.preset / f"split{cfg.split}"


def _backbone_source(cfg: TrainConfig) -> str | None:
    return weights_source(cfg.backbone_weights)


def build_model(cfg: TrainConfig) -> GLIA:
    """The preset with its backbone weights; "none" gives a random (logged) ViT.

    A frozen ResNet-50 local stream gets its weights from ``cfg.local_weights`` whatever the ViT's
    come from; a random one would stay random (it is frozen), so training refuses it.
    """
    overrides = dict(cfg.model_overrides)
    overrides.setdefault("local_weights", weights_source(cfg.local_weights))
    model = create_model(cfg.preset, backbone_weights=_backbone_source(cfg), **overrides)
    if isinstance(model.local, ResNetLocalStream) and overrides["local_weights"] is None:
        raise BackboneWeightsError(f"{cfg.preset} has a frozen ResNet-50 local stream and no weights were given "
                                   "for it: it would stay random. Pass --local-weights FILE (a timm resnet50 "
                                   "checkpoint) or a timm name")
    return model


def loss_of(cfg: TrainConfig) -> IQALoss:
    return IQALoss(cfg.l1_weight, cfg.rank_weight, cross_weight=cfg.cross_rank_weight)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _train_loader(data: TrainData, cfg: TrainConfig, ctx: DistContext) -> DataLoader:
    per_rank = max(1, cfg.batch_size // ctx.world_size)
    if isinstance(data.train_set, LadderCrops):  # the batch counts images: batch_size // L ladders
        per_rank = max(1, per_rank // len(data.train_set.ladders[0]))
    sampler = DistributedSampler(data.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed)
    return DataLoader(data.train_set, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                      collate_fn=collate_skip_failed, pin_memory=ctx.device.type == "cuda", drop_last=False)


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at step ``total``."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def _rng_state() -> dict[str, Any]:
    """Every random stream training draws from (dropout, loader seeds), so a resumed run repeats exactly."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any] | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _resume(path: Path, saved: dict[str, Any], model: GLIA, opt: torch.optim.Optimizer, cfg: TrainConfig,
            out: Path, ctx: DistContext) -> _State:
    from safetensors.torch import load_file

    from glia_edge.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(path)
    if meta.preset != cfg.preset:
        raise CheckpointError(f"{path} is a {meta.preset} checkpoint, but this run trains {cfg.preset}")
    load_weights(model, load_file(str(path)), path)  # the frozen parts (and, for old states, the trained ones)
    if saved.get("weights") is not None:
        # The state is the commit point: its weights win over a ``last`` written after it.
        load_weights(model, saved["weights"], state_path(path))
        if ctx.is_main:
            sync_checkpoints(out, model, saved)
        held_best = saved.get("best_epoch")
    else:
        if ctx.is_main:
            check_legacy_checkpoints(path, model, saved)
        held_best = best_epoch(saved["history"])
    ctx.barrier()
    opt.load_state_dict(saved["optimizer"])
    _set_rng_state(saved.get("rng"))
    log.info("resumed from %s after epoch %d (step %d)", path, saved["epoch"], saved["step"])
    return _State(epoch=saved["epoch"], step=saved["step"], best=saved["best"], history=saved["history"],
                  best_epoch=held_best, best_weights=saved.get("best_weights"), best_meta=saved.get("best_meta"))


def _run_epoch(net: nn.Module, loader: DataLoader, data: TrainData, opt: torch.optim.Optimizer,
               loss_fn: IQALoss, state: _State, total_steps: int, cfg: TrainConfig, ctx: DistContext) -> float:
    from tqdm import tqdm

    net.train()
    loader.sampler.set_epoch(state.epoch)  # type: ignore[union-attr]
    data.train_set.set_epoch(state.epoch)
    losses = []
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
               disable=not (cfg.progress and ctx.is_main))
    for batch in bar:
        if state.step >= total_steps:
            break
        if batch is None:  # every image of the batch failed to load (warned already)
            continue
        x, y = batch[0].to(ctx.device, non_blocking=True), batch[1].to(ctx.device, non_blocking=True)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cfg.amp and ctx.device.type == "cuda"):
            pred = net(x.flatten(0, x.dim() - 4)).view(y.shape)  # ladders (G, L, 3, S, S) -> (G, L)
        loss = loss_fn(pred.float(), y)
        value = float(loss.detach())
        if not math.isfinite(value):  # stop before the step writes nan into the weights
            raise TrainingError(f"the loss became {value} at step {state.step + 1} (epoch {state.epoch + 1}); "
                                "check the labels and the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = set_lr(opt, cosine_lr(cfg.lr, state.step, total_steps))
        opt.step()
        state.step += 1
        losses.append(value)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
    return float(np.mean(losses)) if losses else float("nan")


def _save(model: GLIA, data: TrainData, cfg: TrainConfig, ctx: DistContext, out: Path, state: _State,
          row: dict[str, Any], opt: torch.optim.Optimizer, is_best: bool) -> None:
    """``best`` (when this epoch is the best), then ``last``, then the training state, which is the
    commit point: it holds the weights of both, so an interrupt anywhere in between leaves files
    that ``--resume`` repairs from it (:func:`sync_checkpoints`)."""
    from glia_edge.atomic import atomic_write
    from glia_edge.checkpoint import checkpoint_meta, save_checkpoint

    training = {**{k: v for k, v in asdict(cfg).items() if k not in ("progress", "resume", "overwrite")},
                "loss": loss_of(cfg).describe(), "world_size": ctx.world_size,
                # Absolute, so eval run from another folder still recognises the set the run trained on.
                "annotation": str(Path(data.dataset.source).resolve()), "splits_file": str(data.splits_path),
                "eval_part": "val", "eval_crops": data.eval_crops.name, "split_sizes": data.sizes,
                "n_train": len(data.train.records), "n_val": len(data.val.records),
                "epoch": state.epoch, "step": state.step, "metrics": row, "best_selected_on": "val SRCC",
                "best_epoch": best_epoch(state.history),
                "score_range_from": data.score_range_from}
    meta = checkpoint_meta(model, data.score, data.preprocess, training=training,
                           backbone_weights=_backbone_source(cfg))
    local = model.local if isinstance(model.local, ResNetLocalStream) else None
    if local is not None and overrides_path(cfg.local_weights):
        meta.training["weights_saved"] = "full"  # a local-file ResNet cannot be fetched again by name
    weights = {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}
    if is_best:
        save_checkpoint(out / "best.safetensors", model, meta)
        state.best_epoch, state.best_weights, state.best_meta = state.epoch, weights, meta.to_dict()
    last = save_checkpoint(out / "last.safetensors", model, meta)
    payload = {"optimizer": opt.state_dict(), "epoch": state.epoch, "step": state.step, "best": state.best,
               "history": state.history, "config": asdict(cfg), "protocol": run_protocol(cfg), "rng": _rng_state(),
               "weights": weights, "meta": meta.to_dict(), "best_epoch": state.best_epoch,
               "best_weights": state.best_weights, "best_meta": state.best_meta}
    atomic_write(state_path(last), lambda tmp: torch.save(payload, tmp))


def check_config(cfg: TrainConfig) -> None:
    """Settings that cannot work, refused before any data is read (each names its option)."""
    from glia_edge.models.registry import check_model_options

    try:  # a model option that cannot build fails here, not after the data is prepared
        check_model_options(cfg.preset, cfg.model_overrides)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    crop = int(cfg.model_overrides.get("img_size", GliaConfig.img_size))

    def weight(value: float) -> bool:  # a loss weight: finite and >= 0 (a negative one rewards the error)
        return math.isfinite(value) and value >= 0

    problems = [(not math.isfinite(cfg.lr) or cfg.lr <= 0, f"--lr {cfg.lr:g}: the learning rate must be > 0"),
                (not math.isfinite(cfg.weight_decay) or cfg.weight_decay < 0,
                 f"--weight-decay {cfg.weight_decay:g}: must be >= 0"),
                (not weight(cfg.l1_weight), f"--l1-weight {cfg.l1_weight:g}: must be a finite number >= 0"),
                (not weight(cfg.rank_weight), f"--rank-weight {cfg.rank_weight:g}: must be a finite number >= 0"),
                (not weight(cfg.cross_rank_weight),
                 f"--cross-rank-weight {cfg.cross_rank_weight:g}: must be a finite number >= 0"),
                (cfg.epochs < 1, f"--epochs {cfg.epochs}: must be >= 1"),
                (cfg.batch_size < 1, f"--batch-size {cfg.batch_size}: must be >= 1"),
                (cfg.short_side < crop, f"--short-side {cfg.short_side}: smaller than the model's {crop}-pixel "
                                        f"crops; use --short-side {crop} or more")]
    for bad, message in problems:
        if bad:
            raise TrainingError(message)


def _device_check(cfg: TrainConfig) -> None:
    """A device that cannot be used is a one-line error (as in ``eval``), not a traceback."""
    try:
        resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    except RuntimeError as exc:
        reason = "PyTorch sees no CUDA GPU here" if "no CUDA" in str(exc) else str(exc).strip().splitlines()[0]
        raise BackendUnavailableError(f"--device {cfg.device}: {reason} (use --device cpu or auto)") from None


def train(cfg: TrainConfig) -> TrainResult:
    """Run one training (single process, or one rank under torchrun)."""
    check_config(cfg)
    _device_check(cfg)
    ctx = DistContext.setup(cfg.device)
    try:
        return _train(cfg, ctx)
    finally:
        ctx.close()


def _check_training_labels(cfg: TrainConfig, data: TrainData) -> None:
    """Constant training labels: refused for a sigmoid head (no range to bound scores to), else
    warned. (The range itself is the declared scale, or the training part's: ``prepare_data``.)"""
    scores = np.asarray(data.train.scores(), dtype=np.float64)
    lo, hi = float(scores.min()), float(scores.max())
    sigmoid = cfg.model_overrides.get("score_head", GliaConfig.score_head) == "sigmoid"
    if hi - lo <= 1e-12:
        where = f"{data.dataset.source} (split {cfg.split})"
        if sigmoid:
            raise DatasetError(f"{where}: every training label is {lo:g}, so a sigmoid score head has no range to "
                               "bound scores to; fix the labels or use --score-head linear")
        log.warning("%s: every training label is %g: the model cannot learn to rank images", where, lo)


def _wrap(model: GLIA, ctx: DistContext) -> nn.Module:
    """The standardised-score view of the model, inside DDP when the job is distributed."""
    net: nn.Module = _Standardised(model)
    if not ctx.enabled:
        return net
    # The depthwise conv's CPU gradient layout differs from DDP's bucket view: harmless, only noisy.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    devices = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=devices)


def _train(cfg: TrainConfig, ctx: DistContext) -> TrainResult:
    resume = resolve_resume(cfg.resume) if cfg.resume else None
    out = Path(cfg.output) if cfg.output else (resume.parent if resume else default_output(cfg))
    if out.exists() and not out.is_dir():  # before data preparation, not after it
        raise CheckpointError(f"{out}: is a file; the run's output is a folder")
    if resume is None:
        check_output_free(out, cfg)
    saved = load_state(state_path(resume)) if resume else None
    if resume and saved is not None:  # before data preparation: a changed split is refused at once
        check_resume_config(resume, saved, cfg)
    with run_lock(out, ctx):
        return _train_locked(cfg, ctx, out, resume, saved)


def _train_locked(cfg: TrainConfig, ctx: DistContext, out: Path, resume: Path | None,
                  saved: dict[str, Any] | None) -> TrainResult:
    replacing = resume is None and bool(run_files(out))  # allowed by --overwrite (check_output_free)
    if replacing:
        log.warning("%s holds an earlier run: --overwrite replaces it when this run saves its first epoch", out)
    seed_everything(cfg.seed)
    # Data first: a bad dataset path should fail before a backbone download is attempted.
    data = prepare_data(cfg, ctx, int(cfg.model_overrides.get("img_size", GliaConfig.img_size)))
    _check_training_labels(cfg, data)
    if resume is not None:
        check_resume_split(resume.parent / SPLITS_COPY, data.splits_path, cfg)
    model = build_model(cfg)
    # A new run copies its split file in at its first commit (an earlier run's copy stays until then).
    split_source_file = data.splits_path
    if resume is not None:
        data.splits_path = copy_splits(split_source_file, out, ctx)
    else:
        data.splits_path = out / SPLITS_COPY
    model.set_score_scale(data.score.mean, data.score.std, data.score.min, data.score.max)
    model.to(ctx.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    loader = _train_loader(data, cfg, ctx)
    total_steps = min(cfg.epochs * len(loader), cfg.max_steps or cfg.epochs * len(loader))
    state = _resume(resume, saved, model, opt, cfg, out, ctx) if resume and saved is not None else _State()
    net = _wrap(model, ctx)
    counts = model.param_counts()
    log.info("training %s (%.2fM trainable of %.1fM) on %d %s images (%d crops each), selecting on %d "
             "validation images (%s); %d test images left unread", cfg.preset, counts["trainable"] / 1e6,
             counts["total"] / 1e6, len(data.train.records), cfg.dataset, data.train_set.crops_per_image,
             len(data.val.records), data.eval_crops.describe(), data.sizes["test"])
    metrics_log = MetricsLog(out, state.history) if ctx.is_main else None
    loss_fn = loss_of(cfg)
    while state.epoch < cfg.epochs and state.step < total_steps:
        started = time.perf_counter()
        train_loss = _run_epoch(net, loader, data, opt, loss_fn, state, total_steps, cfg, ctx)
        ctx.average_bn_stats(model)
        metrics = _evaluate(model, data, cfg, ctx)
        state.epoch += 1
        row = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss,
               "lr": cosine_lr(cfg.lr, state.step, total_steps),
               **{f"val_{k}": v for k, v in metrics.items()}, "seconds": time.perf_counter() - started}
        state.history.append(row)
        is_best = state.epoch == 1 or metrics["srcc"] > state.best  # NaN never beats a number
        if is_best and not math.isnan(metrics["srcc"]):
            state.best = metrics["srcc"]
        if metrics_log is not None:
            if resume is None and state.epoch == 1:  # the first commit: the earlier run's files go now
                if replacing:
                    remove_run_files(out)
                copy_splits(split_source_file, out, ctx)
            _save(model, data, cfg, ctx, out, state, row, opt, is_best)
            metrics_log.write(row)  # after the commit point: a resume rewrites it from the state
            log.info("epoch %d: loss %.4f, val SRCC %.4f PLCC %.4f", state.epoch, train_loss,
                     metrics["srcc"], metrics["plcc"])
        ctx.barrier()
    return TrainResult(out, out / "last.safetensors", out / "best.safetensors", state.history, model)


def _evaluate(model: GLIA, data: TrainData, cfg: TrainConfig, ctx: DistContext) -> dict[str, float]:
    from glia_edge.metrics import iqa_metrics

    model.eval()
    pred = predict_records(model, data.val.records, data.preprocess, data.eval_crops, cfg.batch_size, ctx,
                           workers=cfg.workers, progress=cfg.progress)
    mos = np.array(data.val.scores())
    ok = np.isfinite(pred)
    if ok.sum() < 3:
        log.warning("only %d validation image(s) scored; metrics are undefined", int(ok.sum()))
        return {**{k: float("nan") for k in ("srcc", "plcc", "krcc", "rmse")}, "n": int(ok.sum())}
    return iqa_metrics(pred[ok], mos[ok]).to_dict()


__all__ = ["TrainConfig", "TrainResult", "train", "build_model", "cosine_lr", "default_output"]
