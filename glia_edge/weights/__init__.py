"""The default model shipped inside the package (see MODEL_CARD.md beside it)."""
from __future__ import annotations

from pathlib import Path

from glia_edge.errors import CheckpointError

DEFAULT_MODEL = "glia_vit_nano.synthetic"
_HERE = Path(__file__).resolve().parent


def default_checkpoint() -> Path:
    """Path of the packaged default checkpoint (``glia_vit_nano.synthetic.safetensors``)."""
    path = _HERE / f"{DEFAULT_MODEL}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"the default model {DEFAULT_MODEL} is not in this installation ({path}); "
                              "pass a model explicitly (--model / --checkpoint)")
    return path


def default_calibration() -> Path:
    """INT8 calibration images for the default model (``labels.csv`` of graded distortions of some
    of its training photos), written once into the cache (``$GLIA_EDGE_CACHE``)."""
    import logging

    from glia_edge.data.base import cache_root
    from glia_edge.weights.make_default import calibration_set

    csv_path = cache_root() / f"{DEFAULT_MODEL}.calibration" / "labels.csv"
    if not csv_path.is_file():
        logging.getLogger(__name__).info("writing calibration images for %s to %s", DEFAULT_MODEL, csv_path.parent)
        calibration_set(csv_path.parent)
    return csv_path
