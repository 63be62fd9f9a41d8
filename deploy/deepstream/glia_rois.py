"""Print glia-edge's crop grid for a frame size as an nvdspreprocess ``roi-params-src-0`` line.

    python deploy/deepstream/glia_rois.py ARTIFACT WIDTH HEIGHT [CROPS]

ARTIFACT is any glia-edge artifact (``model.trt.onnx``, ``model.engine``, a checkpoint): its
metadata gives ``short_side``, ``crop_size`` and the crop count. The ROIs are glia-edge's own crops
(``glia_edge.preprocess.crop_boxes`` on the frame resized to ``short_side``) mapped back to frame
pixels, so nvdspreprocess feeds nvinfer what ``glia-edge score`` would crop.
"""
from __future__ import annotations

import sys
from pathlib import Path


def deepstream_rois(width: int, height: int, artifact: str | Path,
                    crops: int | None = None) -> list[tuple[int, int, int, int]]:
    """glia-edge's crop grid as nvdspreprocess ROIs (left, top, width, height) in frame pixels."""
    from glia_edge.formats import read_meta, read_sidecar, sidecar_path
    from glia_edge.preprocess import crop_boxes

    path = Path(artifact)
    meta = read_sidecar(path) if sidecar_path(path).is_file() else read_meta(path)
    cfg = meta.preprocess_config
    scale = min(width, height) / cfg.short_side  # resized -> frame pixels
    rw, rh = round(width / scale), round(height / scale)  # the frame after the short-side resize
    side = round(cfg.crop_size * scale)
    return [(round(left * scale), round(top * scale), side, side)
            for left, top, _, _ in crop_boxes(rw, rh, cfg.crop_size, crops or cfg.crops)]


def roi_line(rois: list[tuple[int, int, int, int]]) -> str:
    return "roi-params-src-0=" + ";".join(str(v) for roi in rois for v in roi)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.split("\n\n")[1].strip())
    crops = int(sys.argv[4]) if len(sys.argv) == 5 else None
    print(roi_line(deepstream_rois(int(sys.argv[2]), int(sys.argv[3]), sys.argv[1], crops)))
