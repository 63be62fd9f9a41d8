"""TensorRT backend: runs a serialized engine (``.engine``/``.plan``) built on this device.

Written against the TensorRT 10 Python API and limited to what TensorRT 10.3 (JetPack 6) has:
``trt.Runtime.deserialize_cuda_engine``, the named-tensor API (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_profile_shape``), ``set_input_shape`` for
a dynamic batch inside optimization profile 0, ``set_tensor_address`` and ``execute_async_v3``
on a CUDA stream. Device and pinned host buffers come from cuda-python (``cuda.bindings.runtime``,
or the legacy ``cuda.cudart``), so no torch is imported. The metadata is read from the sidecar
``<engine>.json``; the engine file itself stays plain for trtexec, Triton and DeepStream.
Engines are tied to the GPU model and TensorRT version that built them: one that does not
deserialize here is reported as such, with the command to rebuild it.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from glia_edge.errors import BackendUnavailableError, UnsupportedArtifactError
from glia_edge.runtimes.base import Backend
from glia_edge.formats import read_sidecar

log = logging.getLogger(__name__)


#: TensorRT releases older than this lack APIs used here (JetPack 6 ships 10.3).
MIN_TENSORRT = (10, 3)


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, cudart)``, or a :class:`BackendUnavailableError` saying what is missing."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer is not
        raise BackendUnavailableError(
            f"TensorRT is not installed here ({exc}); it comes from NVIDIA's index or JetPack, not PyPI: "
            "pip install 'glia-edge[tensorrt]' --extra-index-url https://pypi.nvidia.com") from exc
    version = tuple(int(p) for p in str(trt.__version__).split(".")[:2] if p.isdigit())
    if version < MIN_TENSORRT:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is too old: glia-edge needs TensorRT "
                                      f"{'.'.join(map(str, MIN_TENSORRT))}+")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError as exc:
            raise BackendUnavailableError("cuda-python is not installed: pip install 'glia-edge[tensorrt]'") from exc
    return trt, cudart


def unavailable_reason() -> str | None:
    """``None`` where TensorRT engines can be built and run here, else why not.

    The one probe every caller uses (export, benchmarks, tests): TensorRT and the CUDA runtime
    bindings import, a CUDA GPU is visible, and a TensorRT builder can be created on it.
    """
    try:
        trt, cudart = import_tensorrt()
    except BackendUnavailableError as exc:
        return str(exc)
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the bindings load but the driver library does not
        return f"the CUDA runtime cannot be used here ({exc})"
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return "no CUDA GPU is visible here: TensorRT engines are built and run on an NVIDIA GPU"
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:
        return f"TensorRT {trt.__version__} could not create a builder on this GPU ({exc})"
    if builder is None:
        return f"TensorRT {trt.__version__} could not create a builder on this GPU"
    return None


def _call(cudart: Any, result: Any) -> Any:
    """Unwrap a cuda-python ``(error, *values)`` tuple, raising on any CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values or None


def _device_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


class TensorRtBackend(Backend):
    format = "trt"

    def __init__(self, path: str | Path, *, batch_size: int = 8, device: str = "cuda:0",
                 precision: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {path}")
        meta = read_sidecar(path)
        self.check_precision(meta, precision)
        trt, cudart = import_tensorrt()
        self._trt, self._cudart = trt, cudart
        self._buffers: list[tuple[Any, int]] = []  # (free function, pointer) for close()
        self._stream: Any = None
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count == 0:
            reason = cudart.cudaGetErrorName(err)[1] if err != cudart.cudaError_t.cudaSuccess else b"0 devices"
            raise BackendUnavailableError(f"no CUDA GPU available ({reason.decode()}): TensorRT engines run only "
                                          "on the NVIDIA GPU they were built for")
        _call(cudart, cudart.cudaSetDevice(_device_index(device)))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UnsupportedArtifactError(
                f"{path}: TensorRT {trt.__version__} could not deserialize this engine; engines only run on the GPU "
                "model and TensorRT version that built them: rebuild it here with `glia-edge build-engine MODEL.trt.onnx`")
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = self._io_names(path)
        min_batch, max_batch, fixed = self._batch_range()
        super().__init__(path, meta, batch_size=min(batch_size, max_batch), fixed_batch=fixed)
        self.device, self._min_batch = device, min_batch
        self._allocate(max_batch)
        log.info("TensorRT %s engine %s: batch %d..%d", trt.__version__, path.name, min_batch, max_batch)

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

    def _allocate(self, max_batch: int) -> None:
        """Pinned host and device buffers for the largest batch; tensor addresses are set once."""
        trt, cudart, ctx = self._trt, self._cudart, self.context
        size = self.preprocess_config.crop_size
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        if not ctx.set_input_shape(self.input_name, (max_batch, 3, size, size)):
            raise UnsupportedArtifactError(f"{self.path}: engine does not take (N, 3, {size}, {size}) input")
        out_count = int(np.prod(tuple(ctx.get_tensor_shape(self.output_name))))
        self._stream = _call(cudart, cudart.cudaStreamCreate())
        self._host_in, self._dev_in = self._pair(max_batch * 3 * size * size, self._in_dtype)
        self._host_out, self._dev_out = self._pair(out_count, self._out_dtype)
        ctx.set_tensor_address(self.input_name, self._dev_in)
        ctx.set_tensor_address(self.output_name, self._dev_out)

    def _pair(self, count: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
        cudart = self._cudart
        nbytes = count * dtype.itemsize
        host = int(_call(cudart, cudart.cudaMallocHost(nbytes)))
        self._buffers.append((cudart.cudaFreeHost, host))
        dev = int(_call(cudart, cudart.cudaMalloc(nbytes)))
        self._buffers.append((cudart.cudaFree, dev))
        return np.frombuffer((ctypes.c_byte * nbytes).from_address(host), dtype=dtype), dev

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cudart, ctx, n = self._cudart, self.context, len(batch)
        if n < self._min_batch:  # below the profile's minimum: pad, and drop the padding's scores
            batch = np.concatenate([batch, np.zeros((self._min_batch - n, *batch.shape[1:]), batch.dtype)])
        x = np.ascontiguousarray(batch, dtype=self._in_dtype)
        self._host_in[:x.size] = x.reshape(-1)
        if not ctx.set_input_shape(self.input_name, x.shape):
            raise ValueError(f"{self.path}: input shape {x.shape} is outside the engine's optimization profile")
        out_shape = tuple(ctx.get_tensor_shape(self.output_name))
        out_count = int(np.prod(out_shape))
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _call(cudart, cudart.cudaMemcpyAsync(self._dev_in, self._host_in.ctypes.data, x.nbytes, h2d, self._stream))
        if not ctx.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"{self.path}: TensorRT execution failed (see the TensorRT log above)")
        _call(cudart, cudart.cudaMemcpyAsync(self._host_out.ctypes.data, self._dev_out,
                                             out_count * self._out_dtype.itemsize, d2h, self._stream))
        _call(cudart, cudart.cudaStreamSynchronize(self._stream))
        return self._host_out[:out_count].reshape(out_shape)[:n].astype(np.float32)

    def close(self) -> None:
        self.context = self.engine = None
        self._host_in = self._host_out = None  # type: ignore[assignment]  # views of pinned memory: drop first
        for free, pointer in reversed(self._buffers):
            free(pointer)
        self._buffers = []
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
