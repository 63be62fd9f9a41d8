"""A recording stand-in for the third-party ``tensorrt`` and ``cuda`` (cuda-python) modules.

It implements only their public API as glia-edge calls it (TensorRT 10.3 Python API names,
cuda-python runtime signatures: every call returns ``(cudaError_t, *values)``) and records each
call, so CPU tests can drive glia-edge's own TensorRT code (profile, timing cache, buffers,
inference, ``build-engine``) and check what it asked of TensorRT and CUDA. None of glia-edge's
code is replaced. "Device" memory is host memory here; "inference" is a fixed function of the
input (the mean of each crop times 100 plus 1), so results can be checked exactly.

``install(monkeypatch)`` puts both modules into ``sys.modules``; ``install_into_sys_modules()``
does the same in a subprocess (no pytest there).
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENGINE_MAGIC = b"STANDIN-TRT-ENGINE\n"
CACHE_MAGIC = b"STANDIN-TIMING-CACHE:"
FOREIGN_CACHE = b"FOREIGN-GPU-TIMING-CACHE"  # a cache made elsewhere: set_timing_cache refuses it


@dataclass
class Settings:
    """What the stand-in machine looks like, and the recording of every call."""

    version: str = "10.3.0"
    devices: int = 1
    driver_error: int = 0  # a cudaError_t value returned by cudaGetDeviceCount
    builder_fails: bool = False
    input_shape: tuple[int, ...] = (-1, 3, 224, 224)
    graph_precision: str = "fp32"  # what the "parsed ONNX" carries
    fail_call: dict[str, int] = field(default_factory=dict)  # cuda function -> fail its n-th call (1-based)
    infer_delay_s: float = 0.0
    calls: list[tuple[str, tuple[Any, ...], int]] = field(default_factory=list)  # (name, args, thread id)
    live: dict[int, Any] = field(default_factory=dict)  # allocations not yet freed: address -> buffer
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((name, args, threading.get_ident()))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args, _ in self.calls if n == name]

    def count(self, name: str) -> int:
        return len(self.named(name))


SETTINGS = Settings()


# -- cuda.bindings.runtime ---------------------------------------------------------------------
class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStream_t:
    _next = 0x5000

    def __init__(self) -> None:
        cudaStream_t._next += 1
        self._handle = cudaStream_t._next

    def __int__(self) -> int:
        return self._handle


def _fails(name: str) -> bool:
    SETTINGS.record(name)
    n = SETTINGS.fail_call.get(name)
    return n is not None and SETTINGS.count(name) == n


def cudaGetDeviceCount() -> tuple[cudaError_t, int]:
    SETTINGS.record("cudaGetDeviceCount")
    if SETTINGS.driver_error:
        return cudaError_t(SETTINGS.driver_error), 0
    return cudaError_t.cudaSuccess, SETTINGS.devices


def cudaGetErrorName(error: cudaError_t) -> tuple[cudaError_t, bytes]:
    return cudaError_t.cudaSuccess, cudaError_t(error).name.encode()


def cudaSetDevice(device: int) -> tuple[cudaError_t]:
    SETTINGS.record("cudaSetDevice", device)
    ok = 0 <= device < SETTINGS.devices
    return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorNoDevice,)


def cudaStreamCreate() -> tuple[cudaError_t, cudaStream_t | None]:
    if _fails("cudaStreamCreate"):
        return cudaError_t.cudaErrorMemoryAllocation, None
    stream = cudaStream_t()
    SETTINGS.live[int(stream)] = stream
    return cudaError_t.cudaSuccess, stream


def cudaStreamDestroy(stream: cudaStream_t) -> tuple[cudaError_t]:
    SETTINGS.record("cudaStreamDestroy", int(stream))
    SETTINGS.live.pop(int(stream), None)
    return (cudaError_t.cudaSuccess,)


def cudaStreamSynchronize(stream: cudaStream_t) -> tuple[cudaError_t]:
    SETTINGS.record("cudaStreamSynchronize", int(stream))
    return (cudaError_t.cudaSuccess,)


def _alloc(name: str, size: int) -> tuple[cudaError_t, int]:
    if _fails(name):
        return cudaError_t.cudaErrorMemoryAllocation, 0
    buf = ctypes.create_string_buffer(size)
    address = ctypes.addressof(buf)
    SETTINGS.live[address] = buf
    return cudaError_t.cudaSuccess, address


def _free(name: str, address: int) -> tuple[cudaError_t]:
    SETTINGS.record(name, address)
    SETTINGS.live.pop(address, None)
    return (cudaError_t.cudaSuccess,)


def cudaMallocHost(size: int) -> tuple[cudaError_t, int]:
    return _alloc("cudaMallocHost", size)


def cudaMalloc(size: int) -> tuple[cudaError_t, int]:
    return _alloc("cudaMalloc", size)


def cudaFreeHost(address: int) -> tuple[cudaError_t]:
    return _free("cudaFreeHost", address)


def cudaFree(address: int) -> tuple[cudaError_t]:
    return _free("cudaFree", address)


def cudaMemcpyAsync(dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: cudaStream_t) -> tuple[cudaError_t]:
    SETTINGS.record("cudaMemcpyAsync", dst, src, count, kind, int(stream))
    ctypes.memmove(dst, src, count)
    return (cudaError_t.cudaSuccess,)


# -- tensorrt ----------------------------------------------------------------------------------
class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 5


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    TF32 = 7


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    MATRIX_MULTIPLY = 1
    CAST = 2
    QUANTIZE = 3
    DEQUANTIZE = 4


def nptype(dtype: DataType) -> type:
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8}[dtype]


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType = DataType.FLOAT) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class _Layer:
    def __init__(self, kind: LayerType, out_dtype: DataType) -> None:
        self.type, self._out = kind, _Tensor("out", (), out_dtype)
        self.num_outputs = 1

    def get_output(self, index: int) -> _Tensor:
        return self._out


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.layers: list[_Layer] = []
        self.input = _Tensor("images", SETTINGS.input_shape)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, index: int) -> _Layer:
        return self.layers[index]

    def get_input(self, index: int) -> _Tensor:
        return self.input


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path: str) -> bool:
        SETTINGS.record("parse_from_file", path)
        layers = {"fp32": [_Layer(LayerType.MATRIX_MULTIPLY, DataType.FLOAT)],
                  "fp16": [_Layer(LayerType.CAST, DataType.HALF), _Layer(LayerType.MATRIX_MULTIPLY, DataType.HALF)],
                  "int8": [_Layer(LayerType.QUANTIZE, DataType.INT8), _Layer(LayerType.DEQUANTIZE, DataType.FLOAT)]}
        self.network.layers = layers[SETTINGS.graph_precision]
        return True

    def get_error(self, index: int) -> str:
        return "no error"


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002 - TensorRT's names
        SETTINGS.record("set_shape", name, tuple(min), tuple(opt), tuple(max))
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data


class _Config:
    def __init__(self) -> None:
        self.profiles: list[_Profile] = []
        self.cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        SETTINGS.record("set_memory_pool_limit", pool, size)

    def clear_flag(self, flag: BuilderFlag) -> None:
        SETTINGS.record("clear_flag", flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> ITimingCache:
        SETTINGS.record("create_timing_cache", bytes(data))
        return ITimingCache(data)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        SETTINGS.record("set_timing_cache", cache.data, ignore_mismatch)
        if cache.data.startswith(FOREIGN_CACHE) and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.cache


class Builder:
    def __init__(self, logger: Logger) -> None:
        SETTINGS.record("Builder")
        if SETTINGS.builder_fails:
            raise RuntimeError("pybind11::init(): factory function returned nullptr")

    def create_network(self, flags: int = 0) -> _Network:
        SETTINGS.record("create_network", flags)
        return _Network(flags)

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def create_builder_config(self) -> _Config:
        return _Config()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
        SETTINGS.record("build_serialized_network")
        if config.cache is not None:  # the builder adds this device's timings to the attached cache
            config.cache.data = CACHE_MAGIC + b"timings"
        profile = config.profiles[0].shapes.get("images") if config.profiles else None
        shape = network.input.shape
        spec = {"input": list(shape), "profile": [list(s) for s in profile] if profile else None}
        return ENGINE_MAGIC + json.dumps(spec).encode()


class _Context:
    def __init__(self, engine: "ICudaEngine") -> None:
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        SETTINGS.record("set_input_shape", id(self), tuple(shape))
        low, high = self.engine.batch_range
        if not low <= shape[0] <= high or tuple(shape[1:]) != tuple(self.engine.input_shape[1:]):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.shape is not None
        return (self.shape[0],)

    def set_tensor_address(self, name: str, address: int) -> bool:
        SETTINGS.record("set_tensor_address", id(self), name, address)
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        SETTINGS.record("execute_async_v3", id(self), stream_handle)
        with SETTINGS.lock:
            SETTINGS.in_flight += 1
            SETTINGS.max_in_flight = max(SETTINGS.max_in_flight, SETTINGS.in_flight)
        try:
            assert self.shape is not None
            n, per = self.shape[0], int(np.prod(self.shape[1:]))
            x = np.ctypeslib.as_array((ctypes.c_float * (n * per)).from_address(self.addresses["images"]))
            out = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["scores"]))
            time.sleep(SETTINGS.infer_delay_s)
            out[:] = x.reshape(n, per).mean(axis=1) * 100.0 + 1.0
        finally:
            with SETTINGS.lock:
                SETTINGS.in_flight -= 1
        return True


class ICudaEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.input_shape = tuple(spec["input"])
        profile = spec["profile"]
        fixed = self.input_shape[0]
        self.batch_range = (profile[0][0], profile[2][0]) if profile else (fixed, fixed)
        self.profile = profile
        self.num_io_tensors = 2

    def get_tensor_name(self, index: int) -> str:
        return ("images", "scores")[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == "images" else (self.input_shape[0],)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.profile]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def create_execution_context(self) -> _Context:
        SETTINGS.record("create_execution_context")
        return _Context(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        SETTINGS.record("Runtime")

    def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
        if not bytes(data).startswith(ENGINE_MAGIC):
            return None
        return ICudaEngine(json.loads(bytes(data)[len(ENGINE_MAGIC):]))


# -- installing --------------------------------------------------------------------------------
def modules(settings: Settings) -> dict[str, types.ModuleType]:
    """``tensorrt``, ``cuda``, ``cuda.bindings`` and ``cuda.bindings.runtime`` built from this file."""
    global SETTINGS
    SETTINGS = settings
    this = sys.modules[__name__]
    trt = types.ModuleType("tensorrt")
    for name in ("Logger", "NetworkDefinitionCreationFlag", "MemoryPoolType", "BuilderFlag", "TensorIOMode",
                 "DataType", "LayerType", "nptype", "OnnxParser", "ITimingCache", "Builder", "ICudaEngine", "Runtime"):
        setattr(trt, name, getattr(this, name))
    trt.__version__ = settings.version
    runtime = types.ModuleType("cuda.bindings.runtime")
    for name in ("cudaError_t", "cudaMemcpyKind", "cudaStream_t", "cudaGetDeviceCount", "cudaGetErrorName",
                 "cudaSetDevice", "cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize", "cudaMallocHost",
                 "cudaMalloc", "cudaFreeHost", "cudaFree", "cudaMemcpyAsync"):
        setattr(runtime, name, getattr(this, name))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []  # type: ignore[attr-defined]  # a package
    cuda.bindings = bindings  # type: ignore[attr-defined]
    return {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": runtime}


def install(monkeypatch: Any, settings: Settings | None = None) -> Settings:
    """Install the stand-in for one test (``monkeypatch`` undoes it)."""
    settings = settings or Settings()
    for name, module in modules(settings).items():
        monkeypatch.setitem(sys.modules, name, module)
    return settings


def install_into_sys_modules(settings: Settings | None = None) -> Settings:
    """Install the stand-in for the rest of this process (for subprocess checks)."""
    settings = settings or Settings()
    sys.modules.update(modules(settings))
    return settings
