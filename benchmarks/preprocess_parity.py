"""Scores of the packaged default model through the fast preprocessing (version 2) and the exact one
(version 1), where the fast path changes pixels; or (``--reference whole-image``) through version
2's centre crop computed from only the pixels it reads and version 2's whole-image path (resize
the whole reduced image, then cut), which agree to within one level per pixel.

The default model's held-out images are 576x384, where neither DCT scaling nor area-averaging
fires (both versions give identical pixels). So each held-out image is also upscaled (Lanczos)
to a camera-sized copy, ``--scale`` times larger, and scored as a JPEG file (DCT scaling fires)
and as an OpenCV BGR frame (area-averaging fires), through both versions. Reported per input
kind: Spearman(fast, exact) and max |delta| as a share of the model's declared score range.

    python -m glia_edge.benchmarks.preprocess_parity --work DIR [--scale 6] [--limit N] [--reference whole-image]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


#: What the fast path is compared with: version 1, or version 2's whole-image path.
REFERENCES = ("v1", "whole-image")


def _score_both(model: Any, inputs: list[Any], bgr: bool, desc: str | None = None,
                reference: str = "v1") -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``inputs`` through version 2 as the runtimes run it, and through ``reference``."""
    from tqdm.auto import tqdm

    from glia_edge.preprocess import crops_from_image, load_reduced

    base = model.preprocess_config
    v2 = base.replace(version=2)

    def runtime(x: Any) -> float:  # whatever model.preprocess_config says, as `score` runs it
        return float(model.predict(x, bgr=bgr)[0])

    def whole_image(x: Any) -> float:  # version 2 as first written: resize it all, then cut
        return float(model.predict_batch(crops_from_image(load_reduced(x, v2, bgr=bgr), v2, 1))[0])

    runs = [("v2", v2, runtime),
            ("v1", base.replace(version=1), runtime) if reference == "v1" else ("whole-image", v2, whole_image)]
    out = []
    try:
        for label, cfg, score in runs:
            model.preprocess_config = cfg
            items = tqdm(inputs, desc=f"{desc} {label}", unit="img") if desc else inputs
            out.append(np.array([score(x) for x in items]))
    finally:
        model.preprocess_config = base
    return out[0], out[1]


def run(work: Path, scale: int = 6, limit: int | None = None, reference: str = "v1") -> dict[str, Any]:
    from PIL import Image
    from tqdm.auto import tqdm

    import glia_edge
    from glia_edge import metrics
    from glia_edge.weights import default_set_csv

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    held = default_set_csv("test").parent  # the default model's test photos
    paths = sorted((held / "images").glob("*.png"))
    if limit:  # an even sample across photos, types and levels
        paths = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, limit).round().astype(int))]
    big = work / f"test_x{scale}"
    big.mkdir(parents=True, exist_ok=True)
    jpegs = []
    for path in tqdm(paths, desc="camera-size copies", unit="img"):
        dest = big / (path.stem + ".jpg")
        if not dest.is_file():
            img = Image.open(path).convert("RGB")
            img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS).save(dest, quality=92)
        jpegs.append(dest)
    report: dict[str, Any] = {"images": len(paths), "scale": scale, "reference": reference}
    with glia_edge.load(None) as model:
        spec = model.meta.score_spec
        cases = {"held-out as shipped (path)": ([str(p) for p in paths], False),
                 f"x{scale} JPEG (path, DCT scaling)": ([str(p) for p in jpegs], False),
                 f"x{scale} BGR frame (area-averaging)": (None, True)}
        for name, (inputs, bgr) in cases.items():
            if inputs is None:  # frames made one at a time: 220 full-size frames would not fit in memory
                fast, exact = [], []
                for path in tqdm(jpegs, desc=name, unit="img"):
                    frame = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1])
                    f, e = _score_both(model, [frame], True, reference=reference)
                    fast.append(f[0]), exact.append(e[0])
                fast_a, exact_a = np.array(fast), np.array(exact)
            else:
                fast_a, exact_a = _score_both(model, inputs, bgr, desc=name, reference=reference)
            agree = metrics.agreement(fast_a, exact_a)
            report[name] = {"spearman": agree.spearman, "max_abs_delta": agree.max_abs_delta,
                            "max_delta_share_of_range": agree.max_abs_delta / spec.range,
                            "mean_abs_delta": agree.mean_abs_delta}
            log.info("%s: Spearman %.5f, max |delta| %.4f (%.3f%% of the range %g..%g)", name, agree.spearman,
                     agree.max_abs_delta, 100 * agree.max_abs_delta / spec.range, spec.min, spec.max)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="Folder for the images (reused).")
    parser.add_argument("--scale", type=int, default=6, help="Upscaling of the camera-size copies.")
    parser.add_argument("--limit", type=int, default=None, help="At most N held-out images, evenly sampled.")
    parser.add_argument("--reference", choices=REFERENCES, default="v1",
                        help="Compare version 2 with version 1, or its centre crop with its whole-image path.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args.work, args.scale, args.limit, args.reference)
    name = "parity.json" if args.reference == "v1" else f"parity-{args.reference}.json"
    (args.work / name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
