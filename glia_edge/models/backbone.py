"""Frozen pretrained networks for GLIA: build a timm model and load its weights explicitly.

Weights come from a local file or a timm pretrained name. Files: safetensors (timm's
``model.safetensors``), a PyTorch state dict (``pytorch_model.bin``), or a training checkpoint
whose ``state_dict`` / ``model`` / ``state_dict_ema`` holds the weights (timm's ``train.py``
output, its ``args`` record included), always loaded with ``weights_only``. Either way a failure raises :class:`BackboneWeightsError`; a random backbone happens only
when the caller passes ``None``, and it is logged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from glia_edge.errors import BackboneWeightsError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")
#: ``backbone_weights`` value for "a checkpoint supplies these weights next" (no random-init warning).
FROM_CHECKPOINT = "checkpoint"


def looks_like_path(ref: str) -> bool:
    return Path(ref).suffix.lower() in WEIGHT_SUFFIXES or "/" in ref or Path(ref).exists()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import argparse

    # timm's train.py stores its argparse options beside the weights; allow that plain record and
    # nothing else (weights_only: no arbitrary code runs while loading).
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_weights_file(model: nn.Module, path: str | Path, what: str) -> None:
    """Load a local weights file into ``model`` (head weights may be absent or mismatched)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"{what} weights file not found: {path}")
    try:
        state = _read_state_dict(path)
    except Exception as exc:  # corrupt file, wrong format
        # torch's own message runs to several lines and suggests weights_only=False: not here.
        raise BackboneWeightsError(f"cannot read {what} weights {path}: not a readable safetensors file or "
                                   f"PyTorch state dict ({type(exc).__name__})") from exc
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith(("head", "fc."))]
    if missing:
        raise BackboneWeightsError(
            f"{what} weights {path} do not fit the architecture: {len(missing)} tensors missing or "
            f"mis-shaped (first: {missing[:3]})")
    model.load_state_dict(usable, strict=False)
    log.info("loaded %s weights from %s (%d tensors)", what, path, len(usable))


def create_timm(arch: str, weights: str | None, what: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch)`` with weights from nowhere (random), a file, or a timm name.

    ``weights="checkpoint"`` builds the bare architecture for a checkpoint's weights to fill.
    """
    if weights == FROM_CHECKPOINT:
        return timm.create_model(arch, pretrained=False, **kwargs)
    if weights is None:
        log.warning("%s %s is randomly initialised (no weights given)", what, arch)
        return timm.create_model(arch, pretrained=False, **kwargs)
    if looks_like_path(weights):
        model = timm.create_model(arch, pretrained=False, **kwargs)
        load_weights_file(model, weights, what)
        return model
    name = weights  # a timm pretrained name: "arch" or "arch.tag"
    if name.split(".")[0] != arch:
        raise BackboneWeightsError(f"{what} weights {weights!r} are for a different architecture than {arch!r}")
    if kwargs.get("depth"):  # a cut backbone keeps the first blocks of the pretrained weights
        kwargs["pretrained_strict"] = False
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # network, hub or missing-tag failure
        raise BackboneWeightsError(
            f"could not load pretrained {what} {name!r} through timm ({type(exc).__name__}: {exc}). "
            "Without network access, download the weights elsewhere and pass the local file "
            "(--backbone-weights PATH).") from exc


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module
