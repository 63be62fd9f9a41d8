"""Domain errors shared by training, export and every runtime."""
from __future__ import annotations

import re


def printable(text: str) -> str:
    """``text`` with each non-printable character (a newline, an escape, an undecodable byte's
    surrogate) written as Python escapes it (``\\n``), so a file name cannot break a one-line
    message or forge a second one; other characters, accented or not, stay as they are."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


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


class OutputError(GliaError, OSError):
    """An output path cannot be written; the message names it and the reason."""


class BackendUnavailableError(GliaError, RuntimeError):
    """The backend an artifact needs is not installed, has no device here, or cannot open the
    artifact (a corrupt file, too little memory); the message names the artifact and the reason."""


class TrainingError(GliaError, RuntimeError):
    """Training cannot start or go on (a bad setting, a busy or mismatched run folder, a loss that
    became nan or infinite); the message says which."""


class CalibrationError(GliaError, RuntimeError):
    """Calibration data for INT8 quantization is missing or unusable."""


class AccuracyGateError(GliaError, RuntimeError):
    """An exported artifact drifted from the PyTorch reference beyond the allowed bound."""


class ExportError(GliaError, RuntimeError):
    """An export step failed (exporter, converter, parser or engine builder); the message says which."""


#: Lines of a native runtime's message that only say where in its sources it was raised
#: (OpenVINO: ``Exception from src/inference/src/cpp/core.cpp:84:``).
_SOURCE_LOCATION = re.compile(r"^(Exception from \S+:\d+:?|Check .* failed at \S+:\d+:?)$")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` that says more than where in a runtime's sources it was
    raised, cut to ``limit`` characters: for status cells, logs and one-line CLI errors."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    said = [line for line in lines if not _SOURCE_LOCATION.match(line)] or lines
    first = said[0] if said else ""
    if first.endswith(":") and len(said) > 1:  # "... failed with GeneralFailure:" + what failed
        first = f"{first} {said[1]}"
    return f"{type(exc).__name__}: {first}"[:limit]
