"""Rebuild the packaged default model, ``glia_vit_nano.synthetic``, and its held-out report.

    python -m glia_edge.recipes.default_model --work runs/default [--install]

1. ``make_dataset`` writes graded distortions (5 levels) of photos that install with the project's
   dependencies (scikit-image, scikit-learn, matplotlib; 9 colour, 7 grey-level): a training set
   from the training references and types, and a test set from two held-out colour references
   with every type, three of them never trained on.
2. ``glia_edge.train`` trains ``glia_vit_nano`` (ViT-Ti/16 cut to 4 blocks) with its ViT backbone
   randomly initialised and frozen: no pretrained weights are reachable where it was built, and a
   trainable backbone ranked unseen distortions far worse in the same CPU time (docs/model.md).
   The local conv stream, the adapters and the head are trained, on *ladders* (one crop of one
   reference at every level of one type) with PLCC + L1 + a within-ladder ranking loss
   (``--rank-weight``): without it, batch-level PLCC over a dozen photos let content swamp the
   distortion and noise raised scores.
3. The best checkpoint (validation SRCC on a held-out training reference) is stored with its
   frozen weights in float16 (the package's size limit; the model runs in float32) and checked
   with ``level_ranking`` on the held-out references, for the held-out and the trained types.
   ``report.json`` lands in ``--work``; ``--install`` copies the model into the package and
   re-exports the packaged runtime artifacts from it (:mod:`glia_edge.recipes.package_artifacts`).

The held-out and calibration sets are the package's data (:func:`glia_edge.weights.default_sets`),
so export, the benchmark and the tests rebuild the same images without this recipe.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from glia_edge.distortions import make_dataset, reference_images
from glia_edge.weights import DEFAULT_MODEL, default_checkpoint, default_sets

log = logging.getLogger(__name__)

TRAIN_REFS = ("astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
              "china", "flower", "grace_hopper", "camera", "moon", "coins", "clock", "brick", "grass", "gravel")
TRAIN_TYPES = ("gaussian_blur", "gaussian_noise", "jpeg", "pixelate", "contrast", "overexposure", "underexposure",
               "saturation")
HELD_OUT = default_sets()["held_out"]
TEST_REFS = HELD_OUT.photos
HELD_OUT_TYPES = tuple(t for t in HELD_OUT.types if t not in TRAIN_TYPES)
PRESET = "glia_vit_nano"
SEED = 3407


def build_sets(work: Path, tiles: int) -> tuple[Path, Path]:
    train_csv = work / "synth-train" / "labels.csv"
    test_csv = work / "synth-test" / "labels.csv"
    if not train_csv.is_file():
        refs = reference_images(names=TRAIN_REFS, max_tiles=tiles)
        make_dataset(train_csv.parent, refs, types=TRAIN_TYPES, seed=SEED, progress=True)
    if not test_csv.is_file():
        HELD_OUT.write(test_csv.parent, progress=True)
    return train_csv, test_csv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/default"), help="working folder")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=30, help="images per step (5 ladders of 6 levels)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--crops-per-image", type=int, default=3, help="ladders per (reference, type) per epoch")
    parser.add_argument("--rank-weight", type=float, default=1.0, help="ladder ranking loss weight (0 = off)")
    parser.add_argument("--tiles", type=int, default=8, help="tiles cut from each large reference photo")
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    parser.add_argument("--install", action="store_true", help="copy the result into the package")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from glia_edge.checkpoint import load_checkpoint, save_checkpoint
    from glia_edge.ranking import level_ranking
    from glia_edge.train import TrainConfig, train

    train_csv, test_csv = build_sets(args.work, args.tiles)
    cfg = TrainConfig(dataset="csv", csv=str(train_csv), preset=PRESET, backbone_weights="none",
                      output=str(args.work / "train"), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      crops_per_image=args.crops_per_image, rank_weight=args.rank_weight, seed=SEED, workers=0,
                      max_steps=args.max_steps)
    result = train(cfg)

    model, meta = load_checkpoint(result.best)
    meta.training.update(frozen_dtype="float16", recipe="python -m glia_edge.recipes.default_model",
                         train_refs=list(TRAIN_REFS), train_types=list(TRAIN_TYPES),
                         held_out_refs=list(TEST_REFS), held_out_types=list(HELD_OUT_TYPES))
    shipped = save_checkpoint(args.work / f"{DEFAULT_MODEL}.safetensors", model, meta)

    import glia_edge

    backend = glia_edge.load(shipped)
    report = {
        "held_out_types": level_ranking(backend, test_csv, types=HELD_OUT_TYPES).to_dict(),
        "trained_types": level_ranking(backend, test_csv, types=TRAIN_TYPES).to_dict(),
        "history": result.history,
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    log.info("held-out types: mean Spearman(level, score) %.3f %s", report["held_out_types"]["mean_srcc"],
             report["held_out_types"]["per_type"])
    log.info("trained types on held-out refs: %.3f", report["trained_types"]["mean_srcc"])
    if args.install:
        import shutil

        target = default_checkpoint().parent
        for suffix in (".safetensors", ".json"):
            shutil.copy2(shipped.with_suffix(suffix), target / f"{DEFAULT_MODEL}{suffix}")
        log.info("installed %s into %s", DEFAULT_MODEL, target)
        from glia_edge.recipes.package_artifacts import package

        package()  # the runtime artifacts and their figures, from the checkpoint just installed


if __name__ == "__main__":
    main()
