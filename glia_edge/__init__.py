"""glia-edge: blind image quality assessment with GLIA, from PyTorch training to edge runtimes.

``glia_edge.load(path)`` opens any artifact (checkpoint, ONNX, OpenVINO IR, TensorRT engine) and
scores images with identical preprocessing. Importing this package does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from glia_edge.errors import (AccuracyGateError, BackboneWeightsError, BackendUnavailableError, CalibrationError,
                              CheckpointError, DatasetError, GliaError, ImageLoadError, UnsupportedArtifactError)
from glia_edge.meta import ArtifactMeta, ScoreSpec
from glia_edge.preprocess import PreprocessConfig, load_image, preprocess

__version__ = "0.1.0"

if TYPE_CHECKING:
    from glia_edge.runtimes.base import Backend


def load(path: Any = None, **options: Any) -> "Backend":
    """Open an artifact with the backend it needs (see :func:`glia_edge.runtimes.load`)."""
    from glia_edge.runtimes.base import load as _load

    return _load(path, **options)


def create_model(name: str, backbone_weights: str | None = None, **overrides: Any) -> Any:
    """Build a GLIA preset in PyTorch (needs ``glia-edge[train]``)."""
    from glia_edge.models import create_model as _create

    return _create(name, backbone_weights=backbone_weights, **overrides)


def list_models(pattern: str = "*") -> list[str]:
    from glia_edge.models import list_models as _list

    return _list(pattern)


__all__ = ["load", "create_model", "list_models", "preprocess", "load_image", "PreprocessConfig", "ArtifactMeta",
           "ScoreSpec", "GliaError", "ImageLoadError", "BackboneWeightsError", "CheckpointError", "DatasetError",
           "UnsupportedArtifactError", "BackendUnavailableError", "CalibrationError", "AccuracyGateError"]
