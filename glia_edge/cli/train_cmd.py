"""``glia-edge train``: train a GLIA preset on an IQA set (LoDa's protocol by default).

Under ``torchrun --nproc_per_node N -m glia_edge train ...`` the same command trains with DDP
(NCCL on GPUs, Gloo on CPUs); ``--batch-size`` stays the global batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from glia_edge.cli.common import bars_wanted, cli_errors, parse_key_values

_OVERRIDE_HELP = "Model override (GliaConfig field), e.g. --model-opt local_channels=8,16,16,24. Repeatable."


def parse_overrides(pairs: list[str], **named: Any) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values as Python literals where they parse) plus the named options given."""
    out: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
    try:
        out.update(parse_key_values(pairs, "--model-opt"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return out


def check_preset(preset: str, overrides: dict[str, Any]) -> None:
    """An unknown preset or model option is a usage error now, not a traceback after data preparation."""
    from glia_edge.models.registry import check_model_options

    try:
        check_model_options(preset, overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--preset / --model-opt") from None


def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="koniq, livec, spaq, kadid or csv."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (as released)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Annotation file (csv set: path,score[,ref])."),
    preset: str = typer.Option("glia_vit_small", "--preset", "-p", help="GLIA preset (glia-edge presets)."),
    backbone_weights: str = typer.Option("pretrained", "--backbone-weights",
                                         help="Local file, timm name, 'pretrained' (preset's timm tag) or 'none'."),
    local_weights: str = typer.Option("pretrained", "--local-weights",
                                      help="Presets with a frozen ResNet-50 local stream: its weights (local timm "
                                           "checkpoint file, timm name, or 'pretrained' = the preset's timm tag)."),
    split: str = typer.Option("0", "--split", help="Split 0-9, or 'official' (KonIQ-10k's own)."),
    split_source: str = typer.Option("glia", "--split-source",
                                     help="glia (this project's seeded splits) or loda (LoDa's, regenerated)."),
    splits_file: Optional[Path] = typer.Option(None, "--splits-file", help="Split JSON (made if missing)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder (default: runs/SET/PRESET/splitN)."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Passes over the training images."),
    batch_size: int = typer.Option(128, "--batch-size", "-b", min=1, help="Global batch (crops)."),
    lr: float = typer.Option(3e-4, "--lr", help="Peak learning rate (AdamW, cosine schedule)."),
    weight_decay: float = typer.Option(1e-2, "--weight-decay", help="AdamW weight decay."),
    crops_per_image: Optional[int] = typer.Option(None, "--crops-per-image", min=1,
                                                  help="Random crops per image per epoch [3; 5 on livec]."),
    eval_crops: str = typer.Option("random15", "--eval-crops",
                                   help="Validation crops: random15 (LoDa's, seeded), grid1, grid5 or grid9."),
    l1_weight: float = typer.Option(0.1, "--l1-weight", help="Weight of the L1 term beside the PLCC loss."),
    rank_weight: float = typer.Option(0.0, "--rank-weight", min=0.0,
                                      help="Graded synthetic csv sets: weight of the ladder ranking loss "
                                           "(same crop, every level of one distortion; 0 = off)."),
    cross_rank_weight: float = typer.Option(0.0, "--cross-rank-weight", min=0.0,
                                            help="Graded synthetic csv sets: weight of the ranking loss across "
                                                 "ladders (other photos; margin grows with the level gap; 0 = off)."),
    ladder_repeat: list[str] = typer.Option([], "--ladder-repeat", metavar="TYPE=N",
                                            help="Graded synthetic csv sets: serve the ladders of distortion TYPE N "
                                                 "times per epoch (a type slow to learn; repeatable)."),
    score_head: Optional[str] = typer.Option(None, "--score-head",
                                             help="linear (unbounded) or sigmoid (bounded to the set's declared "
                                                  "scale, else to the training labels' range)."),
    seed: int = typer.Option(3407, "--seed", help="Seed of the crops, shuffling and initialisation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    workers: int = typer.Option(4, "--workers", min=0, help="Data loader processes."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast on CUDA."),
    resume: Optional[Path] = typer.Option(None, "--resume",
                                          help="Run folder or last.safetensors to continue (same data, split, "
                                               "seed and model; more --epochs extends it)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the run already in --output (refused without this or --resume). "
                                        "Its files are removed when this run saves its first epoch; a run that "
                                        "fails before that leaves it intact."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many steps."),
    limit: Optional[int] = typer.Option(None, "--limit", min=3, help="Use at most N train and N held-out images."),
    short_side: int = typer.Option(384, "--short-side", help="Resize so the short side is this."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Cut the backbone to this many blocks."),
    adapter_dim: Optional[int] = typer.Option(None, "--adapter-dim",
                                               help="Width of the adapters (default: the preset's)."),
    adapter_every: Optional[int] = typer.Option(None, "--adapter-every",
                                                 help="An adapter every N backbone blocks (default: the preset's)."),
    head_hidden: Optional[int] = typer.Option(None, "--head-hidden",
                                               help="Hidden width of the score head (default: the preset's)."),
    model_opt: list[str] = typer.Option([], "--model-opt", help=_OVERRIDE_HELP),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="csv set: scores are DMOS-like."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Train GLIA: AdamW, cosine, PLCC+L1, random crops with flips; best (on validation)/last checkpoints."""
    from glia_edge.data.splits import parse_split
    from glia_edge.train import TrainConfig
    from glia_edge.train import train as run_training
    from glia_edge.train_config import parse_ladder_repeat

    try:
        repeats = dict(parse_ladder_repeat(item) for item in ladder_repeat)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ladder-repeat") from None
    overrides = parse_overrides(model_opt, depth=depth, adapter_dim=adapter_dim, adapter_every=adapter_every,
                                head_hidden=head_hidden, score_head=score_head)
    check_preset(preset, overrides)
    with cli_errors():
        cfg = TrainConfig(
            dataset=dataset.lower(), root=str(root) if root else None, csv=str(csv) if csv else None, preset=preset,
            backbone_weights=backbone_weights, local_weights=local_weights, split=parse_split(split),
            split_source=split_source,
            splits_file=str(splits_file) if splits_file else None, output=str(output) if output else None,
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, crops_per_image=crops_per_image,
            eval_crops=eval_crops, l1_weight=l1_weight, rank_weight=rank_weight,
            cross_rank_weight=cross_rank_weight, ladder_repeats=repeats, seed=seed, device=device,
            workers=workers, amp=amp,
            resume=str(resume) if resume else None, max_steps=max_steps, limit=limit, short_side=short_side,
            model_overrides=overrides, progress=bars_wanted(progress), overwrite=overwrite,
            dataset_options={"higher_is_better": False} if lower_is_better else {})
        result = run_training(cfg)
    _report(result)


def _report(result: Any) -> None:
    import os

    from rich.console import Console
    from rich.table import Table

    if int(os.environ.get("RANK", "0")) != 0 or not result.history:
        return
    last = result.history[-1]
    table = Table("epoch", "step", "train loss", *[k for k in last if k.endswith(("srcc", "plcc", "krcc", "rmse"))])
    for row in result.history:
        table.add_row(str(row["epoch"]), str(row["step"]), f"{row['train_loss']:.4f}",
                      *[f"{row[k]:.4f}" for k in last if k.endswith(("srcc", "plcc", "krcc", "rmse"))])
    console = Console(markup=False)  # paths are data, not Rich markup
    console.print(table)
    console.print(f"checkpoints: {result.best} (best), {result.last} (last); metrics: {result.output / 'metrics.csv'}")


def register(app: typer.Typer) -> None:
    app.command()(train)
