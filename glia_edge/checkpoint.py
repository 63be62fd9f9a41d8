"""GLIA checkpoints: safetensors weights with the full config in the file's own header.

``save_checkpoint`` writes ``NAME.safetensors`` (its header carries the :class:`ArtifactMeta`
JSON under ``glia_edge``) and the same JSON beside it as ``NAME.json`` for people and tools.

When the backbone came from a timm pretrained name, only the trainable weights and buffers are
saved (a few MB instead of hundreds) and the header records that name, so loading rebuilds the
backbone from it; any other backbone (random, or trained here) is saved in full. A checkpoint
therefore always loads without guessing.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from glia_edge.atomic import atomic_write  # re-exported: glia_edge.checkpoint.atomic_write
from glia_edge.errors import CheckpointError, UnsupportedArtifactError
from glia_edge.formats import FORMATS, safetensors_metadata
from glia_edge.meta import ArtifactMeta, ScoreSpec, dumps_json, tool_versions
from glia_edge.models.backbone import FROM_CHECKPOINT, looks_like_path
from glia_edge.models.glia import GLIA, model_from_config
from glia_edge.preprocess import PreprocessConfig

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".safetensors"


def checkpoint_meta(model: GLIA, score: ScoreSpec, preprocess: PreprocessConfig, training: dict[str, Any] | None = None,
                    backbone_weights: str | None = None) -> ArtifactMeta:
    training = dict(training or {})
    if backbone_weights == "pretrained":
        backbone_weights = model.cfg.backbone_pretrained
    # A timm name can be fetched again: store only what was trained. Anything else is stored in full.
    trainable_only = bool(backbone_weights) and not looks_like_path(backbone_weights)
    training["backbone_weights"] = backbone_weights
    training["weights_saved"] = "trainable" if trainable_only else "full"
    return ArtifactMeta(preset=model.cfg.name, model_config=model.cfg.to_dict(), preprocess=preprocess.to_dict(),
                        score=vars(score).copy(), format="torch", precision="fp32", input=input_spec(model),
                        training=training, tools=tool_versions())


def input_spec(model: GLIA) -> dict[str, Any]:
    """The model input as artifacts record it, with the normalisation its graph applies."""
    return {"layout": "NCHW", "channels": "RGB", "dtype": "float32", "range": [0.0, 1.0],
            "normalization_in_graph": {"mean": [round(float(v), 6) for v in model.pixel_mean.flatten()],
                                       "std": [round(float(v), 6) for v in model.pixel_std.flatten()]}}


def save_checkpoint(path: str | Path, model: GLIA, meta: ArtifactMeta) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` twin atomically; returns the weights path."""
    path = Path(path)
    if path.suffix != CHECKPOINT_SUFFIX:
        path = path.with_suffix(CHECKPOINT_SUFFIX)
    full = meta.training.get("weights_saved", "full") == "full"
    state = model.state_dict() if full else model.trainable_state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    frozen_dtype = meta.training.get("frozen_dtype")
    if frozen_dtype:
        # Shipping size: frozen (never trained) float tensors may be stored at lower precision;
        # load_state_dict casts them back into the fp32 model.
        trained = set(model.trainable_state_dict())
        dtype = getattr(torch, frozen_dtype)
        tensors = {k: v.to(dtype) if k not in trained and v.is_floating_point() else v for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=safetensors_metadata(meta)))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(dumps_json(meta.to_dict(), indent=2)))
    return path


def read_checkpoint_meta(path: str | Path) -> ArtifactMeta:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return FORMATS["torch"].read_meta(path)
    except UnsupportedArtifactError as exc:
        raise CheckpointError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc


def load_checkpoint(path: str | Path, backbone_weights: str | None = None,
                    map_location: str = "cpu") -> tuple[GLIA, ArtifactMeta]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode).

    ``backbone_weights`` overrides where a trainable-only checkpoint's backbone comes from
    (e.g. a local copy of the timm weights on a machine without network).
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_checkpoint_meta(path)
    saved = meta.training.get("weights_saved", "full")
    if saved == "full":
        model = model_from_config(meta.model_config, backbone_weights=FROM_CHECKPOINT, local_weights=FROM_CHECKPOINT)
    else:
        source = backbone_weights or meta.training.get("backbone_weights")
        model = model_from_config(meta.model_config, backbone_weights=source, local_weights="pretrained")
    state = load_file(str(path), device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if saved == "full":
        missing_real = missing
    else:
        trainable_keys = set(model.trainable_state_dict())
        missing_real = [k for k in missing if k in trainable_keys]
    if missing_real or unexpected:
        raise CheckpointError(f"{path}: weights do not match the saved config "
                              f"(missing {missing_real[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), meta
