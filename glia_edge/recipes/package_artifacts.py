"""Export the packaged default model's runtime artifacts from its checkpoint, into the package.

    python -m glia_edge.recipes.package_artifacts [--checkpoint PATH] [--dest DIR]

Writes every file of :data:`glia_edge.weights.EXPORTED` (the FP32 ONNX that ONNX Runtime and
OpenVINO both run, an INT8 ONNX for ONNX Runtime, an INT8 OpenVINO IR) with ``glia_edge.export``
from the checkpoint (the packaged one by default), INT8 calibrated on the default model's own
calibration photos (training photos), each gated against PyTorch on its validation photos. Each artifact's metadata
records the SHA-256 of the checkpoint it came from (``source_checkpoint_sha256``); a test fails
when a shipped artifact and the shipped checkpoint disagree. ``ARTIFACTS.json`` beside them
lists each file's size, checksum and gate figures (the model card's artifact table quotes it).

``python -m glia_edge.recipes.default_model --install`` runs this after installing a new
checkpoint, so the checkpoint, its artifacts and the card's figures are rebuilt together.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from glia_edge.weights import EXPORTED, default_calibration, default_checkpoint, default_set_csv

log = logging.getLogger(__name__)

#: The summary written beside the artifacts.
SUMMARY = "ARTIFACTS.json"


def package(checkpoint: Path | None = None, dest: Path | None = None, *, val: Path | None = None) -> dict[str, Any]:
    """Export every packaged artifact of ``checkpoint`` into ``dest`` and write the summary; returns it."""
    from glia_edge.export import export
    from glia_edge.formats import artifact_size_mb
    from glia_edge.meta import sha256_file

    checkpoint = checkpoint or default_checkpoint()
    dest = dest or default_checkpoint().parent
    val = val or default_set_csv("validation")
    calib = default_calibration()
    summary: dict[str, Any] = {"checkpoint": checkpoint.name, "checkpoint_sha256": sha256_file(checkpoint),
                               "validation": "the default model's validation set (glia_edge.weights.default_sets)",
                               "artifacts": {}}
    for name, (target, precision) in EXPORTED.items():
        result = export(checkpoint, target=target, precision=precision, output=dest / name, val=val,
                        calib=calib if precision == "int8" else None)
        gate = result.gate_report
        summary["artifacts"][name] = {
            "format": target, "precision": precision, "size_mb": round(artifact_size_mb(dest / name), 2),
            "sha256": {p.name: sha256_file(p) for p in result.files if p.is_file()},
            "source_checkpoint_sha256": result.meta.source_checkpoint_sha256,
            "gate": None if gate is None else {k: (round(v, 6) if isinstance(v, float) else v)
                                               for k, v in gate.to_dict().items()},
        }
        log.info("%s: %s", name, gate.summary() if gate else "no gate")
    (dest / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to export (default: packaged)")
    parser.add_argument("--dest", type=Path, default=None, help="folder to write into (default: the package's)")
    parser.add_argument("--val", type=Path, default=None, help="gate images (default: the validation set)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    package(args.checkpoint, args.dest, val=args.val)


if __name__ == "__main__":
    main()
