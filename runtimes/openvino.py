"""OpenVINO backend: IR (.xml + .bin) in FP32, FP16, BF16 or INT8 (NNCF), or a glia-edge ONNX model.

On CPUs with bf16 support OpenVINO silently runs FP32 models in BF16, so the inference precision
is always set: by default from the artifact (FP32 and FP16 IRs run their float parts in ``f32``,
INT8 IRs in ``bf16`` where the CPU has BF16 units, a BF16 IR in ``bf16``, and an IR whose metadata
records a measured choice runs that), or by the ``inference_precision`` hint (``fp32``, ``bf16``,
``fp16``, or ``device`` for OpenVINO's own choice). ``precision`` only checks the artifact's.
``mode="throughput"`` compiles with the THROUGHPUT hint and splits each batch across the
device's optimal number of infer requests, run asynchronously (``start_async`` / ``wait``).
``shapes="static"`` (the default) compiles an IR with a dynamic batch axis once per batch size it
meets, that axis fixed (faster kernels; a throughput-mode batch splits into equal parts, the last
padded); ``shapes="dynamic"`` compiles it once for every size. No
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

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from glia_edge.errors import BackendUnavailableError
from glia_edge.runtimes.base import Backend
from glia_edge.formats import openvino_meta_from_model, resolve_ir
from glia_edge.ov_core import shared_core

log = logging.getLogger(__name__)

#: Inference precision hint -> OpenVINO INFERENCE_PRECISION_HINT ("device": OpenVINO decides).
INFERENCE_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "device": None}
#: Infer requests one backend creates at most when no ``max_requests`` is given (one per concurrent caller).
DEFAULT_MAX_REQUESTS = 8
#: The hint used when none is given, from the artifact's precision. An INT8 IR runs its float parts
#: in BF16 on CPUs with BF16 units (its export gate measured it so; elsewhere f32), unless its
#: metadata names another (``--precision auto`` records the one it measured best within the bound).
_DEFAULT_HINT = {"fp32": "fp32", "fp16": "fp32", "int8": "bf16-if-supported", "bf16": "bf16"}
#: ``shapes``: "static" compiles an IR with a dynamic batch axis once per batch size met, that axis
#: fixed (kernels chosen for a known shape: up to 1.24x the dynamic compilation's throughput at batch
#: 8 and a quarter less latency at batch 1, benchmarks/RESULTS.md section 3); "dynamic" compiles once
#: for every batch size.
SHAPES = ("static", "dynamic")
#: Compilations one backend keeps at most, its own batch size's always among them (each holds its own
#: packed weights); past it the least recently used shape with no request out is dropped.
MAX_STATIC_SHAPES = 4


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


#: Reductions :func:`keep_reduce_dims` rewrites, by OpenVINO op type -> its opset function name.
_REDUCTIONS = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
               "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}


def keep_reduce_dims(model: Any) -> int:
    """Rewrite each reduction that drops its axes (``keep_dims=False``) as one that keeps them,
    followed by a ``Squeeze`` of those axes: the same values, and the count rewritten.

    Why: with a static batch the CPU plugin pushes a FakeQuantize that follows a Concat into the
    Concat's inputs and fuses it into a ``keep_dims=False`` Reduce; that fused kernel quantized
    the adapters' token means wrongly (OpenVINO 2026.4, NNCF INT8 GLIA: up to 14 quantization
    levels off, differently in each batch row, so one image scored up to 0.5 apart by its place in
    the batch). A Reduce followed by a Squeeze is not fused that way; dynamic-batch compilations
    were right either way. The rewrite costs nothing measurable (docs/export.md)."""
    try:
        from openvino import opset13 as ops
    except ImportError:  # OpenVINO before 2024.5 keeps the opsets under openvino.runtime
        from openvino.runtime import opset13 as ops

    count = 0
    for node in model.get_ordered_ops():
        make = _REDUCTIONS.get(node.get_type_name())
        if make is None or node.get_attributes().get("keep_dims", True):
            continue
        axes = node.input(1).get_source_output()
        kept = getattr(ops, make)(node.input(0).get_source_output(), axes, keep_dims=True)
        squeezed = ops.squeeze(kept.output(0), axes)
        squeezed.set_friendly_name(node.get_friendly_name())  # profiles and errors keep the ONNX name
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(squeezed.output(0))
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


def read_for_cpu(core: Any, xml: Path) -> Any:
    """The model the backend (and the profiler) compiles from an IR or a glia-edge ONNX file."""
    import openvino as ov

    # An ONNX model goes through convert_model, whose transformations fuse attention into
    # ScaledDotProductAttention; Core.read_model skips them (3x the Transposes at run time).
    model = ov.convert_model(str(xml)) if xml.suffix.lower() == ".onnx" else core.read_model(str(xml))
    keep_reduce_dims(model)
    return model


def with_batch(model: Any, batch: int) -> Any:
    """A copy of ``model`` with its batch axis fixed to ``batch`` (the other axes as they are)."""
    import openvino as ov

    static = model.clone()
    shape = ov.PartialShape(static.inputs[0].get_partial_shape())
    shape[0] = ov.Dimension(batch)
    static.reshape({static.inputs[0]: shape})
    return static


class _Pool:
    """One compiled model and the infer requests created from it so far."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.idle: list[Any] = [compiled.create_infer_request()]
        self.created = 1
        self.last_used = 0

    @property
    def busy(self) -> int:
        return self.created - len(self.idle)


class OpenVinoBackend(Backend):
    format = "openvino"

    def __init__(self, path: str | Path, *, batch_size: int = 8, threads: int | None = None, device: str = "CPU",
                 precision: str | None = None, inference_precision: str | None = None,
                 mode: str = "latency", max_requests: int | None = None, shapes: str = "static") -> None:
        try:
            import openvino  # noqa: F401  (present, or one clear error before any work)
        except ImportError as exc:
            raise BackendUnavailableError("openvino is not installed: pip install 'glia-edge[openvino]'") from exc
        if shapes not in SHAPES:
            raise ValueError(f"OpenVINO shapes must be one of {', '.join(SHAPES)}, got {shapes!r}")
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"OpenVINO max_requests must be >= 1, got {max_requests}")
        xml = resolve_ir(path)
        core = shared_core()  # one per process: see glia_edge/ov_core.py
        model = read_for_cpu(core, xml)
        meta = openvino_meta_from_model(model, xml)
        self.check_precision(meta, precision)
        shape = model.inputs[0].get_partial_shape()
        fixed = shape[0].get_length() if shape[0].is_static else None
        super().__init__(xml, meta, batch_size=batch_size, fixed_batch=fixed)
        self.check_input_shape([d.get_length() if d.is_static else None for d in shape])
        #: "static": one compilation per batch size met (a fixed-batch IR has only its own).
        self.shapes = "static" if fixed else shapes
        self.mode, self.device = mode, device.upper()
        self._core, self._model = core, model
        self._config = compile_config(meta, core, device, inference_precision=inference_precision,
                                      threads=threads, mode=mode)
        self._pools: dict[int | None, _Pool] = {}
        self._pool_lock = threading.Condition()
        self._tick = 0
        self._closed = False
        # The backend's own batch size is compiled now, so an IR that does not compile fails at load.
        self._primary = self._key(self.batch_size)
        pool = self._pool(self._primary)
        #: How many requests one call splits a batch over (throughput mode: the device's optimum).
        self.split = 1
        if mode == "throughput":
            self.split = max(1, int(pool.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            part = self._key(-(-self.batch_size // self.split))
            if part != self._primary:  # full batches run as parts: keep that shape compiled instead
                del self._pools[self._primary], pool  # freed before the next compilation
                self._primary = part
                pool = self._pool(part)
        #: The compiled model full batches run on (the properties below are read from it).
        self.compiled = pool.compiled
        runs = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        #: What the device really runs: "f32", "bf16", "f16" (an ov.Type's short name).
        self.inference_precision = runs.get_type_name() if hasattr(runs, "get_type_name") else str(runs)
        self.max_requests = max_requests or max(DEFAULT_MAX_REQUESTS, self.split)

    def _key(self, batch: int) -> int | None:
        """The pool a batch of ``batch`` runs on: its own static shape, or None (one for every size)."""
        return None if self.fixed_batch or self.shapes == "dynamic" else batch

    def _pool(self, key: int | None) -> _Pool:
        """The pool of ``key``, compiled on first use; call with ``_pool_lock`` held (or from __init__).

        Compiling under the lock holds other callers up once per new shape (1.5 s for a ViT-S INT8
        IR), which keeps two callers from compiling the same shape twice.
        """
        pool = self._pools.get(key)
        if pool is None:
            model = self._model if key is None else with_batch(self._model, key)
            # The shared Core outlives every compiled model (destroying a Core first can also hang a
            # compiled model's destructor, seen with the THROUGHPUT hint).
            pool = self._pools[key] = _Pool(self._core.compile_model(model, self.device, self._config))
            log.debug("OpenVINO: compiled %s for batch %s", self.path.name, "any" if key is None else key)
            self._evict(keep=key)
        self._tick += 1
        pool.last_used = self._tick
        return pool

    def _evict(self, keep: int | None) -> None:
        """Past MAX_STATIC_SHAPES, drop the least recently used compilations with no request out
        (never the backend's own batch size's, nor ``keep``'s)."""
        spare = [k for k, p in self._pools.items() if k not in (self._primary, keep) and p.busy == 0]
        spare.sort(key=lambda k: self._pools[k].last_used)
        for key in spare[:max(0, len(self._pools) - MAX_STATIC_SHAPES)]:
            del self._pools[key]

    @contextmanager
    def _borrow(self, wanted: int, key: int | None) -> Iterator[list[Any]]:
        """Between 1 and ``wanted`` idle infer requests of ``key``'s pool, for this caller alone until
        the block ends.

        Waits only for the first: a caller never holds requests while waiting for more, so
        callers cannot deadlock each other, and no pool exceeds ``max_requests``.
        """
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("this OpenVINO backend is closed")
            pool = self._pool(key)
            while not pool.idle and pool.created >= self.max_requests:
                self._pool_lock.wait()
                if self._closed:
                    raise RuntimeError("this OpenVINO backend is closed")
            taken = [pool.idle.pop() for _ in range(min(wanted, len(pool.idle)))]
            while len(taken) < wanted and pool.created < self.max_requests:
                taken.append(pool.compiled.create_infer_request())
                pool.created += 1
        try:
            yield taken
        finally:
            with self._pool_lock:
                if not self._closed:  # closed meanwhile: let the requests go
                    pool.idle.extend(taken)
                self._pool_lock.notify_all()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        # A fixed-batch model takes only whole batches, so it cannot be split across requests.
        parts = 1 if self.fixed_batch else min(self.split, n)
        size = -(-n // parts)
        key = self._key(size)
        chunks = [batch[start:start + size] for start in range(0, n, size)]
        if key is not None and len(chunks[-1]) < size:  # a static shape takes whole chunks: pad the last
            pad = np.zeros((size - len(chunks[-1]), *batch.shape[1:]), batch.dtype)
            chunks[-1] = np.concatenate([chunks[-1], pad])
        with self._borrow(len(chunks), key) as requests:
            if len(chunks) == 1:
                return requests[0].infer({0: chunks[0]})[0][:n].copy()
            # The chunks run in parallel on the device's streams (in waves when fewer requests came).
            outputs = []
            for start in range(0, len(chunks), len(requests)):
                wave = list(zip(requests, chunks[start:start + len(requests)]))
                for request, chunk in wave:
                    request.start_async({0: np.ascontiguousarray(chunk)})
                for request, _ in wave:
                    request.wait()
                    outputs.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(outputs)[:n]

    @property
    def requests_created(self) -> int:
        """Infer requests the current compilations have created (each at most ``max_requests``)."""
        with self._pool_lock:
            return sum(pool.created for pool in self._pools.values())

    @property
    def compiled_batches(self) -> list[int | None]:
        """The batch sizes compiled now (None: one compilation for every size)."""
        with self._pool_lock:
            return list(self._pools)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            self._pools = {}
            self.compiled = None
            self._pool_lock.notify_all()
