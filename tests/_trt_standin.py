"""A recording stand-in for the third-party ``tensorrt`` and ``cuda`` (cuda-python) modules.

It implements only their public API as glia-edge calls it (TensorRT 10.3 Python API names,
cuda-python runtime signatures: every call returns ``(cudaError_t, *values)``) and records each
call, so CPU tests can drive glia-edge's own TensorRT code (profile, timing cache, buffers,
inference, ``build-engine``) and check what it asked of TensorRT and CUDA. None of glia-edge's
code is replaced. "Device" memory is host memory here; "inference" is a fixed function of the
input (the mean of each crop times 100 plus 1), so results can be checked exactly.

Where real TensorRT refuses something, so does the stand-in, in the same way (a ``None`` or
``False`` return, not an exception, as TensorRT's Python API does): a damaged timing cache
(``create_timing_cache`` gives ``None``), a parse error (``parse_from_file`` gives ``False`` with
errors), a dynamic input without an optimization profile or with a bad one (``min <= opt <= max``,
the other dimensions as the network's: ``build_serialized_network`` gives ``None``), a byte count
that is not a ``size_t`` (``TypeError``). Enum values are TensorRT 10.3's (``NvInfer.h``).

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
CACHE_MAGIC = b"STANDIN-TIMING-CACHE:"  # the header every cache serializes with (an empty cache: only it)
FOREIGN_CACHE = b"FOREIGN-GPU-TIMING-CACHE"  # a cache made on another GPU: set_timing_cache refuses it
OTHER_VERSION_CACHE = b"OTHER-TRT-VERSION-TIMING-CACHE"  # read, but none of its timings kept (an empty cache)


@dataclass
class Settings:
    """What the stand-in machine looks like, and the recording of every call."""

    version: str = "10.3.0"
    devices: int = 1
    driver_error: int = 0  # a cudaError_t value returned by cudaGetDeviceCount
    builder_fails: bool = False  # a runtime-only install: no builder resource library
    runtime_fails: bool = False
    input_shape: tuple[int, ...] = (-1, 3, 224, 224)
    graph_precision: str = "fp32"  # what the "parsed ONNX" carries
    io_dtype: str = "float32"  # the engine's input and output tensors' type (float16: an FP16-IO engine)
    parse_errors: tuple[str, ...] = ()  # parse_from_file fails with these
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

    def loggers(self) -> set[int]:
        """The ids of the loggers given to builders, runtimes and parsers (TensorRT keeps one per process)."""
        return {args[0] for args in self.named("logger")}


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


# -- tensorrt ---------------------------------------------------------------------------------
class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


def _size_t(value: Any) -> int:
    """What pybind11 accepts for a ``size_t`` argument (a non-negative int below 2**64), else TypeError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise TypeError(f"incompatible function arguments: {value!r} is not a size_t")
    return value


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated in TensorRT 10 (every network is explicit batch)
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    TF32 = 6


class ProfilingVerbosity(enum.IntEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class LayerInformationFormat(enum.IntEnum):
    ONELINE = 0
    JSON = 1


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    CAST = 1
    MATRIX_MULTIPLY = 17
    QUANTIZE = 32
    DEQUANTIZE = 33


def nptype(dtype: DataType) -> type:
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32}[dtype]


_IO_DTYPES = {"float32": DataType.FLOAT, "float16": DataType.HALF}
#: What the engine inspector says each layer of a "parsed ONNX" gives (Format/Datatype strings as TensorRT's).
_INSPECTED = {"fp32": ["Row major linear FP32", "Row major linear FP32"],
              "fp16": ["Row major linear FP32", "Channel major FP16 format where channel % 8 == 0",
                       "Row major linear FP16 format"],
              "int8": ["Row major linear FP32", "Four wide channel vectorized row major Int8 format",
                       "Channel major FP16 format where channel % 8 == 0", "Row major linear FP32"]}


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


class _ParserError:
    def __init__(self, text: str) -> None:
        self._text = text

    def desc(self) -> str:
        return self._text

    def __str__(self) -> str:
        return f"In node -1 (parse): INVALID_GRAPH: {self._text}"


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        SETTINGS.record("logger", id(logger))
        self.network, self._errors = network, []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def parse_from_file(self, path: str) -> bool:
        SETTINGS.record("parse_from_file", path)
        if SETTINGS.parse_errors:
            self._errors = [_ParserError(e) for e in SETTINGS.parse_errors]
            return False
        layers = {"fp32": [_Layer(LayerType.MATRIX_MULTIPLY, DataType.FLOAT)],
                  "fp16": [_Layer(LayerType.CAST, DataType.HALF), _Layer(LayerType.MATRIX_MULTIPLY, DataType.HALF)],
                  "int8": [_Layer(LayerType.QUANTIZE, DataType.INT8), _Layer(LayerType.DEQUANTIZE, DataType.FLOAT)]}
        self.network.layers = layers[SETTINGS.graph_precision]
        return True

    def get_error(self, index: int) -> _ParserError:
        return self._errors[index]


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
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        SETTINGS.record("set_memory_pool_limit", pool, _size_t(size))

    def clear_flag(self, flag: BuilderFlag) -> None:
        SETTINGS.record("clear_flag", flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> ITimingCache | None:
        """An empty cache for ``b""``; ``None`` for bytes that are no timing cache (as TensorRT's nullptr)."""
        data = bytes(data)
        SETTINGS.record("create_timing_cache", data)
        if not data:
            return ITimingCache(CACHE_MAGIC)
        if data.startswith(OTHER_VERSION_CACHE):  # read, but TensorRT kept none of its timings
            return ITimingCache(CACHE_MAGIC)
        if not data.startswith((CACHE_MAGIC, FOREIGN_CACHE)):
            return None
        return ITimingCache(data)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, ITimingCache):  # pybind11: None is not an ITimingCache
            raise TypeError(f"set_timing_cache(): incompatible function arguments: {cache!r}")
        SETTINGS.record("set_timing_cache", cache.data, ignore_mismatch)
        if cache.data.startswith(FOREIGN_CACHE) and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.cache


def _profile_error(network: _Network, config: _Config) -> str | None:
    """Why TensorRT would refuse to build ``network`` with ``config``'s profiles, or None."""
    shape = tuple(network.input.shape)
    if not config.profiles:
        return "Network has dynamic or shape inputs, but no optimization profile has been defined." \
            if -1 in shape else None
    for profile in config.profiles:
        shapes = profile.shapes.get(network.input.name)
        if shapes is None:
            return f"optimization profile is missing values for input {network.input.name}"
        low, opt, high = shapes
        if not len(low) == len(opt) == len(high) == len(shape):
            return f"profile dimensions {shapes} do not match the input's rank {len(shape)}"
        for dim, a, b, c in zip(shape, low, opt, high):
            if not 0 <= a <= b <= c or (dim != -1 and not a == b == c == dim):
                return f"bad optimization profile {shapes} for input {shape}"
    return None


class Builder:
    def __init__(self, logger: Logger) -> None:
        SETTINGS.record("Builder")
        SETTINGS.record("logger", id(logger))
        if SETTINGS.builder_fails:
            raise RuntimeError("pybind11::init(): factory function returned nullptr")

    def create_network(self, flags: int = 0) -> _Network:
        SETTINGS.record("create_network", flags)
        return _Network(flags)

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def create_builder_config(self) -> _Config:
        return _Config()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        SETTINGS.record("build_serialized_network")
        error = _profile_error(network, config)
        if error is not None:
            SETTINGS.record("build_error", error)
            return None
        if config.cache is not None:  # the builder adds this device's timings to the attached cache
            config.cache.data = CACHE_MAGIC + b"timings"
        profile = config.profiles[0].shapes.get("images") if config.profiles else None
        shape = network.input.shape
        spec = {"input": list(shape), "profile": [list(s) for s in profile] if profile else None,
                "io_dtype": SETTINGS.io_dtype, "graph": SETTINGS.graph_precision,
                "verbosity": int(config.profiling_verbosity)}
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
            dtype = self.engine.io_dtype

            def view(name: str, count: int) -> np.ndarray:
                raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.addresses[name])
                return np.frombuffer(raw, dtype=dtype)

            x, out = view("images", n * per), view("scores", n)
            time.sleep(SETTINGS.infer_delay_s)
            out[:] = x.astype(np.float32).reshape(n, per).mean(axis=1) * 100.0 + 1.0
        finally:
            with SETTINGS.lock:
                SETTINGS.in_flight -= 1
        return True


class _Inspector:
    def __init__(self, engine: "ICudaEngine") -> None:
        self.engine = engine

    def get_engine_information(self, format: LayerInformationFormat) -> str:  # noqa: A002 - TensorRT's name
        if self.engine.profiling_verbosity != ProfilingVerbosity.DETAILED:
            layers: list[Any] = [f"layer_{i}" for i in range(len(_INSPECTED[self.engine.graph]))]
        else:
            layers = [{"Name": f"layer_{i}", "LayerType": "Reformat" if i == 0 else "CaskGemm",
                       "Inputs": [{"Name": "in", "Format/Datatype": "Row major linear FP32"}],
                       "Outputs": [{"Name": f"out_{i}", "Format/Datatype": fmt}]}
                      for i, fmt in enumerate(_INSPECTED[self.engine.graph])]
        assert format == LayerInformationFormat.JSON, "the stand-in writes JSON only"
        return json.dumps({"Layers": layers, "Bindings": ["images", "scores"]})


class ICudaEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.input_shape = tuple(spec["input"])
        profile = spec["profile"]
        fixed = self.input_shape[0]
        self.batch_range = (profile[0][0], profile[2][0]) if profile else (fixed, fixed)
        self.profile = profile
        self.io_dtype = np.dtype(spec["io_dtype"])
        self.graph = spec["graph"]
        self.profiling_verbosity = ProfilingVerbosity(spec["verbosity"])
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
        return _IO_DTYPES[self.io_dtype.name]

    def create_execution_context(self) -> _Context:
        SETTINGS.record("create_execution_context")
        return _Context(self)

    def create_engine_inspector(self) -> _Inspector:
        return _Inspector(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        SETTINGS.record("Runtime")
        SETTINGS.record("logger", id(logger))
        if SETTINGS.runtime_fails:
            raise RuntimeError("pybind11::init(): factory function returned nullptr")

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
    for name in ("Logger", "NetworkDefinitionCreationFlag", "MemoryPoolType", "BuilderFlag", "ProfilingVerbosity",
                 "LayerInformationFormat", "TensorIOMode", "DataType", "LayerType", "nptype", "OnnxParser",
                 "ITimingCache", "Builder", "ICudaEngine", "Runtime"):
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
