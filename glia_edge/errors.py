"""Domain errors shared by training, export and every runtime."""
from __future__ import annotations


class GliaError(Exception):
    """Base class for glia-edge errors."""


class ImageLoadError(GliaError, ValueError):
    """An input image cannot be used; the message names the input and the reason."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class BackboneWeightsError(GliaError, RuntimeError):
    """Pretrained backbone weights were asked for and could not be loaded."""


class CheckpointError(GliaError, RuntimeError):
    """A checkpoint is missing, corrupt or inconsistent with its config."""


class DatasetError(GliaError, RuntimeError):
    """A dataset root or its annotation files cannot be used."""


class UnsupportedArtifactError(GliaError, ValueError):
    """No backend knows how to load this artifact."""


class BackendUnavailableError(GliaError, RuntimeError):
    """The backend an artifact needs is not installed or has no device here."""


class CalibrationError(GliaError, RuntimeError):
    """Calibration data for INT8 quantization is missing or unusable."""


class AccuracyGateError(GliaError, RuntimeError):
    """An exported artifact drifted from the PyTorch reference beyond the allowed bound."""


class ExportError(GliaError, RuntimeError):
    """An export step failed (exporter, converter, parser or engine builder); the message says which."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: for status cells and logs."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]
