"""TensorRT backend: runs a serialized engine (``.engine``/``.plan``) built on this device.

Written against the TensorRT 10 Python API and limited to what TensorRT 10.3 (JetPack 6.1+) has:
``trt.Runtime.deserialize_cuda_engine``, the named-tensor API (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_profile_shape``), ``set_input_shape`` for
a dynamic batch inside optimization profile 0, ``set_tensor_address`` and ``execute_async_v3``
on a CUDA stream. Device and pinned host buffers come from cuda-python (``cuda.bindings.runtime``,
or the legacy ``cuda.cudart``), so no torch is imported. The metadata is read from the sidecar
``<engine>.json``; the engine file itself stays plain for trtexec, Triton and DeepStream.

Threads: one backend may be shared by threads. A TensorRT execution context is not safe to use
from two threads at once, so each thread that infers gets its own context, CUDA stream and
buffers (made on its first call, kept for the backend's life) and calls ``cudaSetDevice`` before
each inference, so a worker thread runs on the device the backend was opened for. The
constructing thread's set is made at construction (engine deserialisation plus one context);
each further thread pays one context and its buffers on its first call (milliseconds, and the
engine's activation memory once more).

Engines are tied to the TensorRT version that built them and to the GPU's compute capability:
TensorRT refuses one from another version or architecture, and one from another GPU model of the
same architecture loads with a TensorRT warning (it may run slower, or wrongly). One that does not
deserialize here is reported as such, with the command to rebuild it.

Loading an engine creates only a ``trt.Runtime`` (the probe with ``build=False``), never a
``trt.Builder``: a builder loads TensorRT's builder resource library (over a gigabyte of memory,
shared with the GPU on a Jetson), and a runtime-only install has none. Every TensorRT object here
shares one ``trt.Logger`` (:func:`logger`): TensorRT keeps a single logger per process and warns
when a builder or runtime is given another.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.errors import BackendUnavailableError, UnsupportedArtifactError
from glia_edge.formats import read_sidecar
from glia_edge.runtimes.base import Backend

log = logging.getLogger(__name__)


#: TensorRT releases older than this lack APIs used here (JetPack 6.1 and 6.2 ship 10.3; JetPack 6.0 ships 8.6).
MIN_TENSORRT = (10, 3)
#: The kinds of reason TensorRT cannot be used here (``TensorRtUnavailableError.kind``).
REASON_KINDS = ("no-tensorrt", "old-tensorrt", "no-cuda-python", "cuda-runtime", "cuda-driver", "no-gpu",
                "no-runtime", "no-builder")
_INSTALL = ("pip install 'glia-edge[tensorrt-cu12]' (TensorRT's tensorrt-cu12 packages are on PyPI; "
            "tensorrt-cu13 on CUDA 13 drivers; on a Jetson, JetPack 6.1+'s own TensorRT and "
            "'glia-edge[jetson]': see README 'Jetson')")
#: cudaError_t values the probe names (cuda-python's ``cudaError_t``).
_NO_DEVICE, _INSUFFICIENT_DRIVER = 100, 35
_DRIVER_HINT = ("cuda-python is newer than the driver: use the extra for your CUDA major (nvidia-smi's "
                "\"CUDA Version\"); on a Jetson cuda-python must match JetPack's CUDA minor version "
                "(cuda-python 12.6.x for JetPack 6.1/6.2's CUDA 12.6: 'glia-edge[jetson]')")

_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()
#: The one builder kept for the build path: (tensorrt module, device, builder); see :func:`get_builder`.
_BUILDER: tuple[Any, int, Any] | None = None


def logger(trt: Any) -> Any:
    """The process's one ``trt.Logger`` (WARNING), shared by every builder, runtime and parser here.

    TensorRT keeps a single logger pointer per process; a second ``trt.Logger`` given to a builder
    or runtime makes it warn that the logger "differs from one already provided" and ignores it.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None or _LOGGER[0] is not trt:  # a new tensorrt module (tests swap it): a new logger
            _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
        return _LOGGER[1]


class TensorRtUnavailableError(BackendUnavailableError):
    """TensorRT cannot build or run engines here; ``kind`` is one of :data:`REASON_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        assert kind in REASON_KINDS, kind
        self.kind = kind
        super().__init__(message)


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, cudart)``, or a :class:`TensorRtUnavailableError` saying what is missing."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer is not
        raise TensorRtUnavailableError("no-tensorrt", f"TensorRT is not installed here ({exc}): {_INSTALL}") from exc
    version = tuple(int(p) for p in str(getattr(trt, "__version__", "0")).split(".")[:2] if p.isdigit())
    if version < MIN_TENSORRT:
        raise TensorRtUnavailableError("old-tensorrt", f"TensorRT {getattr(trt, '__version__', '?')} is too old: "
                                       f"glia-edge needs TensorRT {'.'.join(map(str, MIN_TENSORRT))}+ (on a Jetson: "
                                       "JetPack 6.1 or later, which ships TensorRT 10.3; JetPack 6.0 has 8.6)")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError as exc:
            raise TensorRtUnavailableError("no-cuda-python", f"cuda-python is not installed: {_INSTALL}") from exc
    return trt, cudart


def _error_name(cudart: Any, err: Any) -> str:
    try:
        name = cudart.cudaGetErrorName(err)[1]
    except Exception:  # the name lookup itself failed: the code is still worth showing
        return str(err)
    return name.decode() if isinstance(name, bytes) else str(name)


def _call(cudart: Any, result: Any) -> Any:
    """Unwrap a cuda-python ``(error, *values)`` tuple, raising on any CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error {_error_name(cudart, err)}")
    return values[0] if len(values) == 1 else values or None


def check_tensorrt(device: int = 0, *, build: bool = True) -> tuple[Any, Any]:
    """``(tensorrt, cudart)`` where engines can be run (and, with ``build``, built) on ``device``; else raises.

    The one probe every caller uses (export, ``build-engine``, benchmarks, tests, the backend):
    TensorRT and the CUDA runtime bindings import, the driver answers, a GPU is visible, the device
    can be made current and given a stream (what the backend needs to run an engine), and a
    TensorRT runtime can be created. With ``build`` (the default: "can engines be built here?") a
    TensorRT builder too, which is kept and handed to the build (:func:`get_builder`), so a build
    creates one builder however often it was probed. Loading an engine probes with
    ``build=False``: no builder, so a runtime-only install runs the engines it cannot build.
    Raises :class:`TensorRtUnavailableError` with the reason's kind.
    """
    trt, cudart = import_tensorrt()
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the bindings load but the driver library does not
        raise TensorRtUnavailableError("cuda-runtime", f"the CUDA runtime cannot be used here ({exc})") from exc
    if err != cudart.cudaError_t.cudaSuccess:
        name = _error_name(cudart, err)
        if _is_error(cudart, err, "cudaErrorNoDevice", _NO_DEVICE):
            raise TensorRtUnavailableError("no-gpu", f"no CUDA GPU is visible here (the CUDA runtime reports {name}): "
                                           "TensorRT engines are built and run on an NVIDIA GPU; in a container, "
                                           "run it with the GPU passed in (docker --gpus all, or --runtime nvidia "
                                           "on a Jetson)")
        if _is_error(cudart, err, "cudaErrorInsufficientDriver", _INSUFFICIENT_DRIVER):
            raise TensorRtUnavailableError("cuda-driver", f"the CUDA runtime reports {name}: {_DRIVER_HINT}")
        raise TensorRtUnavailableError("cuda-runtime", f"the CUDA runtime reports {name}")
    if count == 0 or device >= count:
        raise TensorRtUnavailableError("no-gpu", f"no CUDA GPU {device} is visible here ({count} found): TensorRT "
                                       "engines are built and run on an NVIDIA GPU")
    try:
        _call(cudart, cudart.cudaSetDevice(device))
        stream = _call(cudart, cudart.cudaStreamCreate())
        _call(cudart, cudart.cudaStreamDestroy(stream))
    except RuntimeError as exc:
        raise TensorRtUnavailableError("cuda-runtime", f"GPU {device} cannot run work here ({exc})") from exc
    _create(trt, trt.Runtime, "no-runtime", "runtime")  # dropped at once: only whether one can be made
    if build:
        get_builder(trt, device)
    return trt, cudart


def _create(trt: Any, make: Any, kind: str, what: str, hint: str = "") -> Any:
    """``make(logger)`` (a TensorRT runtime or builder); a :class:`TensorRtUnavailableError` of
    ``kind`` where it raises or gives None (TensorRT returns None on failure)."""
    try:
        made, reason = make(logger(trt)), ""
    except Exception as exc:  # noqa: BLE001 - TensorRT raises several kinds here
        made, reason = None, f" ({exc})"
    if made is None:
        raise TensorRtUnavailableError(kind, f"TensorRT {trt.__version__} could not create a {what} on this "
                                       f"GPU{reason}{hint}")
    return made


def _is_error(cudart: Any, err: Any, name: str, value: int) -> bool:
    """Whether ``err`` is the cudaError_t ``name`` (by the bindings' member, else by its number)."""
    member = getattr(cudart.cudaError_t, name, None)
    if member is not None and err == member:
        return True
    try:
        return int(err) == value
    except (TypeError, ValueError):
        return False


def get_builder(trt: Any, device: int = 0) -> Any:
    """The ``trt.Builder`` for ``device``, created once and kept (see :func:`release_builder`).

    The probe (``check_tensorrt(build=True)``) and the build (``onnx_to_engine``) both use it, so
    probing before a build costs no second builder. ``device`` must be the current CUDA device.
    Raises :class:`TensorRtUnavailableError` (``no-builder``) where none can be created, e.g. a
    runtime-only install without TensorRT's builder resource library.
    """
    global _BUILDER
    with _LOGGER_LOCK:
        if _BUILDER is not None and _BUILDER[0] is trt and _BUILDER[1] == device:
            return _BUILDER[2]
    builder = _create(trt, trt.Builder, "no-builder", "builder",
                      ": engines can be run here but not built (a runtime-only install?); build them with "
                      "`glia-edge build-engine` where TensorRT's builder is installed, on the same GPU model "
                      "and TensorRT version")
    with _LOGGER_LOCK:
        _BUILDER = (trt, device, builder)
    return builder


def release_builder() -> None:
    """Drop the kept builder (its memory goes back once TensorRT frees it); the next build makes a new one."""
    global _BUILDER
    with _LOGGER_LOCK:
        _BUILDER = None


def unavailable_error(device: int = 0, *, build: bool = True) -> TensorRtUnavailableError | None:
    """The probe's error where TensorRT cannot be used here (to build and run, or only to run), else ``None``.

    It keeps no builder it created (a builder already kept for a build stays).
    """
    kept = _BUILDER is not None
    try:
        check_tensorrt(device, build=build)
    except TensorRtUnavailableError as exc:
        return exc
    finally:
        if not kept:  # an answer only: leave no builder behind that this call created
            release_builder()
    return None


def unavailable_reason(device: int = 0, *, build: bool = True) -> str | None:
    """``None`` where TensorRT engines can be built (unless ``build=False``) and run here, else why not (one line)."""
    exc = unavailable_error(device, build=build)
    return None if exc is None else str(exc)


def _device_index(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"TensorRT device must be cuda or cuda:N, got {device!r}")
    return int(index) if index else 0


@dataclass
class _ThreadState:
    """One thread's execution context, stream and buffers (tensor addresses set once, at creation)."""

    context: Any
    stream: Any
    host_in: np.ndarray
    dev_in: int
    host_out: np.ndarray
    dev_out: int
    buffers: list[tuple[Any, int]] = field(default_factory=list)  # (free function, pointer)


class TensorRtBackend(Backend):
    format = "trt"

    def __init__(self, path: str | Path, *, batch_size: int = 8, device: str = "cuda:0",
                 precision: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {path}")
        meta = read_sidecar(path)
        self.check_precision(meta, precision)
        self._device = _device_index(device)
        trt, cudart = check_tensorrt(self._device, build=False)  # a runtime, never a builder, to run an engine
        self._trt, self._cudart = trt, cudart
        self._lock = threading.Lock()
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._closed = False
        self._runtime = trt.Runtime(logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UnsupportedArtifactError(
                f"{path}: TensorRT {trt.__version__} could not deserialize this engine (see the TensorRT log above); "
                "an engine runs only with the TensorRT version that built it and on GPUs of the same compute "
                "capability: rebuild it here with `glia-edge build-engine MODEL.trt.onnx`")
        self.input_name, self.output_name = self._io_names(path)
        min_batch, max_batch, fixed = self._batch_range()
        super().__init__(path, meta, batch_size=min(batch_size, max_batch), fixed_batch=fixed)
        self.device, self._min_batch, self._max_batch = device, min_batch, max_batch
        size = self.preprocess_config.crop_size
        self._in_shape = (3, size, size)
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._local.state = self._allocate()  # the constructing thread's set, so a bad engine fails here
        log.info("TensorRT %s engine %s: batch %d..%d on %s", trt.__version__, path.name, min_batch, max_batch, device)

    def _io_names(self, path: Path) -> tuple[str, str]:
        trt, engine = self._trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UnsupportedArtifactError(f"{path}: expected one input and one output tensor, "
                                           f"got inputs {inputs} and outputs {outputs}")
        return inputs[0], outputs[0]

    def _batch_range(self) -> tuple[int, int, int | None]:
        """(min, max, fixed) batch: a static engine has one size, a dynamic one its profile-0 range."""
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if shape[0] != -1:
            return shape[0], shape[0], shape[0]
        low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        return int(low[0]), int(high[0]), None

    def _allocate(self) -> _ThreadState:
        """A context, stream and pinned host / device buffers for the largest batch, on the calling thread.

        Tensor addresses are set once here. Whatever was allocated is freed when a step fails.
        """
        cudart = self._cudart
        _call(cudart, cudart.cudaSetDevice(self._device))
        buffers: list[tuple[Any, int]] = []
        stream = None
        try:
            with self._lock:  # contexts are created one at a time from the shared engine
                ctx = self.engine.create_execution_context()
            if ctx is None:
                raise RuntimeError(f"{self.path}: TensorRT could not create an execution context (GPU memory?)")
            if not ctx.set_input_shape(self.input_name, (self._max_batch, *self._in_shape)):
                raise UnsupportedArtifactError(f"{self.path}: engine does not take (N, {', '.join(map(str, self._in_shape))}) input")
            out_count = int(np.prod(tuple(ctx.get_tensor_shape(self.output_name))))
            stream = _call(cudart, cudart.cudaStreamCreate())
            host_in, dev_in = self._pair(self._max_batch * int(np.prod(self._in_shape)), self._in_dtype, buffers)
            host_out, dev_out = self._pair(out_count, self._out_dtype, buffers)
            ctx.set_tensor_address(self.input_name, dev_in)
            ctx.set_tensor_address(self.output_name, dev_out)
        except BaseException:
            self._free(buffers, stream)
            raise
        state = _ThreadState(ctx, stream, host_in, dev_in, host_out, dev_out, buffers)
        with self._lock:
            if self._closed:
                self._release(state)
                raise RuntimeError(f"{self.path}: the TensorRT backend is closed")
            self._states.append(state)
        return state

    def _pair(self, count: int, dtype: np.dtype, buffers: list[tuple[Any, int]]) -> tuple[np.ndarray, int]:
        cudart = self._cudart
        nbytes = count * dtype.itemsize
        host = int(_call(cudart, cudart.cudaMallocHost(nbytes)))
        buffers.append((cudart.cudaFreeHost, host))
        dev = int(_call(cudart, cudart.cudaMalloc(nbytes)))
        buffers.append((cudart.cudaFree, dev))
        return np.frombuffer((ctypes.c_byte * nbytes).from_address(host), dtype=dtype), dev

    def _free(self, buffers: list[tuple[Any, int]], stream: Any) -> None:
        for free, pointer in reversed(buffers):
            err = free(pointer)
            if (err[0] if isinstance(err, tuple) else err) != self._cudart.cudaError_t.cudaSuccess:
                log.warning("freeing CUDA buffer %#x failed: %s", pointer, err)
        buffers.clear()
        if stream is not None:
            self._cudart.cudaStreamDestroy(stream)

    def _release(self, state: _ThreadState) -> None:
        state.context = None
        state.host_in = state.host_out = None  # type: ignore[assignment]  # views of pinned memory: drop first
        self._free(state.buffers, state.stream)
        state.stream = None

    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            if self._closed:
                raise RuntimeError(f"{self.path}: the TensorRT backend is closed")
            state = self._local.state = self._allocate()
        return state

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cudart, n = self._cudart, len(batch)
        state = self._state()
        _call(cudart, cudart.cudaSetDevice(self._device))  # the current device is per thread
        ctx = state.context
        if n < self._min_batch:  # below the profile's minimum: pad, and drop the padding's scores
            batch = np.concatenate([batch, np.zeros((self._min_batch - n, *batch.shape[1:]), batch.dtype)])
        x = np.ascontiguousarray(batch, dtype=self._in_dtype)
        state.host_in[:x.size] = x.reshape(-1)
        if not ctx.set_input_shape(self.input_name, x.shape):
            raise ValueError(f"{self.path}: input shape {x.shape} is outside the engine's optimization profile")
        out_shape = tuple(ctx.get_tensor_shape(self.output_name))
        out_count = int(np.prod(out_shape))
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _call(cudart, cudart.cudaMemcpyAsync(state.dev_in, state.host_in.ctypes.data, x.nbytes, h2d, state.stream))
        if not ctx.execute_async_v3(int(state.stream)):
            raise RuntimeError(f"{self.path}: TensorRT execution failed (see the TensorRT log above)")
        _call(cudart, cudart.cudaMemcpyAsync(state.host_out.ctypes.data, state.dev_out,
                                             out_count * self._out_dtype.itemsize, d2h, state.stream))
        _call(cudart, cudart.cudaStreamSynchronize(state.stream))
        return state.host_out[:out_count].reshape(out_shape)[:n].astype(np.float32)

    @property
    def thread_states(self) -> int:
        """How many threads hold an execution context of this backend."""
        return len(self._states)

    def close(self) -> None:
        """Free every thread's context, stream and buffers; calls from any thread fail afterwards."""
        with self._lock:
            self._closed = True
            states, self._states = self._states, []
        for state in states:
            self._release(state)
        self._local = threading.local()
        self.engine = None
        self._runtime = None  # the runtime after the engine: TensorRT frees an engine before its runtime
