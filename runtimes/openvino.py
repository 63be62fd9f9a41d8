"""OpenVINO backend: IR (.xml + .bin) in FP32, FP16, BF16 or INT8 (NNCF), or a glia-edge ONNX model.

On CPUs with bf16 support OpenVINO silently runs FP32 models in BF16, so the inference precision
is always set: by default from the artifact (FP32, FP16 and INT8 IRs run their float parts in
``f32``, a BF16 IR in ``bf16``), or by the ``inference_precision`` hint (``fp32``, ``bf16``,
``fp16``, or ``device`` for OpenVINO's own choice). ``precision`` only checks the artifact's.
``mode="throughput"`` compiles with the THROUGHPUT hint and splits each batch across the
device's optimal number of infer requests, run asynchronously (``start_async`` / ``wait``). No
Python callback runs on OpenVINO's threads: with ``AsyncInferQueue`` callbacks, closing the
backend could hang (docs/export.md, "At run time").

One backend can be shared by threads. An infer request runs one inference at a time, so each
call borrows requests from a bounded pool (``max_requests``, created on demand) and gives them
back when its outputs are copied out: concurrent callers run in parallel on their own requests,
callers beyond the bound wait for one to come back. OpenVINO also reads ONNX directly: a
glia-edge ``.onnx`` (metadata in its ``metadata_props``) runs here unchanged, which is how the
packaged FP32 model runs on an OpenVINO-only install.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from glia_edge.errors import BackendUnavailableError
from glia_edge.runtimes.base import Backend
from glia_edge.formats import openvino_meta_from_model, resolve_ir
from glia_edge.ov_core import shared_core

#: Inference precision hint -> OpenVINO INFERENCE_PRECISION_HINT ("device": OpenVINO decides).
INFERENCE_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "device": None}
#: Infer requests one backend creates at most when no ``max_requests`` is given (one per concurrent caller).
DEFAULT_MAX_REQUESTS = 8
#: The hint used when none is given, from the artifact's precision. An INT8 IR runs its float parts
#: in BF16 on CPUs with BF16 units (its export gate measured it so; elsewhere f32), unless its
#: metadata names another (``--precision auto`` records the one it measured best within the bound).
_DEFAULT_HINT = {"fp32": "fp32", "fp16": "fp32", "int8": "bf16-if-supported", "bf16": "bf16"}


def _default_hint(meta: Any, core: Any, device: str) -> str:
    recorded = (meta.export or {}).get("inference_precision")
    if recorded:
        return str(recorded)
    hint = _DEFAULT_HINT[meta.precision]
    if hint == "bf16-if-supported":
        try:
            caps = core.get_property(device.upper(), "OPTIMIZATION_CAPABILITIES")
        except RuntimeError:
            caps = ()
        hint = "bf16" if "BF16" in caps else "fp32"
    return hint


def compile_config(meta: Any, core: Any, device: str = "CPU", *, inference_precision: str | None = None,
                   threads: int | None = None, mode: str = "latency") -> dict[str, Any]:
    """The ``compile_model`` config of an artifact: its inference precision (given, or the default
    for its precision on ``device``), threads and performance hint. The profiler uses it too, so a
    profile describes the configuration the backend runs."""
    hint = inference_precision or _default_hint(meta, core, device)
    if hint not in INFERENCE_HINTS:
        raise ValueError(f"OpenVINO inference_precision must be one of {', '.join(INFERENCE_HINTS)}, got {hint!r}")
    if mode not in ("latency", "throughput"):
        raise ValueError(f"OpenVINO mode must be 'latency' or 'throughput', got {mode!r}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
    if INFERENCE_HINTS[hint]:
        config["INFERENCE_PRECISION_HINT"] = INFERENCE_HINTS[hint]
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoBackend(Backend):
    format = "openvino"

    def __init__(self, path: str | Path, *, batch_size: int = 8, threads: int | None = None, device: str = "CPU",
                 precision: str | None = None, inference_precision: str | None = None,
                 mode: str = "latency", max_requests: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailableError("openvino is not installed: pip install 'glia-edge[openvino]'") from exc
        xml = resolve_ir(path)
        core = shared_core()  # one per process: see glia_edge/ov_core.py
        # An ONNX model goes through convert_model, whose transformations fuse attention into
        # ScaledDotProductAttention; Core.read_model skips them (3x the Transposes at run time).
        model = ov.convert_model(str(xml)) if xml.suffix.lower() == ".onnx" else core.read_model(str(xml))
        meta = openvino_meta_from_model(model, xml)
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"OpenVINO max_requests must be >= 1, got {max_requests}")
        self.check_precision(meta, precision)
        config = compile_config(meta, core, device, inference_precision=inference_precision, threads=threads,
                                mode=mode)
        device = device.upper()
        # The shared Core outlives every compiled model (destroying a Core first can also hang a
        # compiled model's destructor, seen with the THROUGHPUT hint).
        self.compiled = core.compile_model(model, device, config)
        runs = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        #: What the device really runs: "f32", "bf16", "f16" (an ov.Type's short name).
        self.inference_precision = runs.get_type_name() if hasattr(runs, "get_type_name") else str(runs)
        shape = model.inputs[0].get_partial_shape()
        fixed = shape[0].get_length() if shape[0].is_static else None
        super().__init__(xml, meta, batch_size=batch_size, fixed_batch=fixed)
        self.mode, self.device = mode, device
        #: How many requests one call splits a batch over (throughput mode: the device's optimum).
        self.split = 1
        if mode == "throughput":
            self.split = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.max_requests = max_requests or max(DEFAULT_MAX_REQUESTS, self.split)
        self._pool_lock = threading.Condition()
        self._idle: list[Any] = [self.compiled.create_infer_request()]
        self._created = 1

    @contextmanager
    def _borrow(self, wanted: int) -> Iterator[list[Any]]:
        """Between 1 and ``wanted`` idle infer requests, for this caller alone until the block ends.

        Waits only for the first: a caller never holds requests while waiting for more, so
        callers cannot deadlock each other, and the pool never exceeds ``max_requests``.
        """
        with self._pool_lock:
            while not self._idle and self._created >= self.max_requests:
                if self.compiled is None:
                    raise RuntimeError("this OpenVINO backend is closed")
                self._pool_lock.wait()
            if self.compiled is None:
                raise RuntimeError("this OpenVINO backend is closed")
            taken = [self._idle.pop() for _ in range(min(wanted, len(self._idle)))]
            while len(taken) < wanted and self._created < self.max_requests:
                taken.append(self.compiled.create_infer_request())
                self._created += 1
        try:
            yield taken
        finally:
            with self._pool_lock:
                if self.compiled is not None:  # closed meanwhile: let the requests go
                    self._idle.extend(taken)
                self._pool_lock.notify_all()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        # A fixed-batch model takes only whole batches, so it cannot be split across requests.
        wanted = 1 if self.fixed_batch else min(self.split, len(batch))
        with self._borrow(wanted) as requests:
            if len(requests) == 1:
                return requests[0].infer({0: batch})[0].copy()
            # Split the batch across the requests; they run in parallel on the device's streams.
            busy = list(zip(requests, np.array_split(batch, len(requests))))
            for request, part in busy:
                request.start_async({0: np.ascontiguousarray(part)})
            outputs = []
            for request, _ in busy:
                request.wait()
                outputs.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(outputs)

    @property
    def requests_created(self) -> int:
        """Infer requests created so far (at most ``max_requests``)."""
        return self._created

    def close(self) -> None:
        with self._pool_lock:
            self._idle = []
            self.compiled = None
            self._pool_lock.notify_all()
