"""Runtimes: one API, ``load(path)``, over PyTorch, ONNX Runtime, OpenVINO and TensorRT.

Only ``torch.py`` imports torch; a camera box installs ``glia-edge[onnxruntime]`` or
``glia-edge[openvino]`` alone.
"""
from glia_edge.runtimes.base import Backend, ScoreResult, backend_class, load
from glia_edge.formats import read_meta

__all__ = ["Backend", "ScoreResult", "backend_class", "load", "read_meta"]
