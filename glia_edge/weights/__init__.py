"""The default model shipped inside the package (see MODEL_CARD.md beside it)."""
from __future__ import annotations

from pathlib import Path

from glia_edge.errors import CheckpointError

DEFAULT_MODEL = "glia_vit_tiny.synthetic"
_HERE = Path(__file__).resolve().parent


def default_checkpoint() -> Path:
    """Path of the packaged default checkpoint (``glia_vit_tiny.synthetic.safetensors``)."""
    path = _HERE / f"{DEFAULT_MODEL}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"the default model {DEFAULT_MODEL} is not in this installation ({path}); "
                              "pass a model explicitly (--model / --checkpoint)")
    return path
