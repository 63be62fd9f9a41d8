"""The machine line of a benchmark report: what the numbers were measured on.

CPU model and (x86) microarchitecture, core counts and the instruction-set flags that decide which
kernels run (AVX-512 VNNI/BF16 and AMX on x86 change the INT8 and BF16 paths of OpenVINO and ONNX
Runtime; dot-product and i8mm on Arm), memory, OS, library versions, the GPU and driver, and on a
Jetson the module model (``/proc/device-tree/model``), the power model (``nvpmodel -q``) and
whether clocks are locked (``jetson_clocks --show``: every CPU's and the GPU's MinFreq equal MaxFreq).
"""
from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from glia_edge.meta import tool_versions

log = logging.getLogger(__name__)

#: CPU flags worth naming in a report (x86 /proc/cpuinfo "flags", Arm "Features").
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                     "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

#: x86 microarchitecture from the CPUID vendor, family and model range (AMD's and Intel's published
#: family/model numbers). Virtual machines often mask the model name ("AMD EPYC") and flags such
#: as pku and rdseed, so flag-based detectors (archspec) answer a generic x86_64_v4 there; family and
#: model survive, and Zen 4 and Zen 5 run OpenVINO's INT8 kernels at very different speeds.
MICROARCHITECTURES: dict[tuple[str, int], tuple[tuple[int, int, str], ...]] = {
    # (vendor, family): (first model, last model + 1, name), ...
    ("AuthenticAMD", 0x17): ((0x00, 0x30, "Zen/Zen+"), (0x30, 0x100, "Zen 2")),
    ("AuthenticAMD", 0x19): ((0x00, 0x10, "Zen 3"), (0x10, 0x20, "Zen 4"), (0x20, 0x60, "Zen 3"),
                             (0x60, 0x80, "Zen 4"), (0xA0, 0xB0, "Zen 4")),
    ("AuthenticAMD", 0x1A): ((0x00, 0x100, "Zen 5"),),
    ("GenuineIntel", 6): ((0x55, 0x56, "Skylake-SP/Cascade Lake/Cooper Lake"), (0x6A, 0x6D, "Ice Lake-SP"),
                          (0x8F, 0x90, "Sapphire Rapids"), (0xAD, 0xAF, "Granite Rapids"),
                          (0xCF, 0xD0, "Emerald Rapids")),
}


def microarchitecture(vendor: str | None, family: int | None, model: int | None) -> str | None:
    """``("AuthenticAMD", 26, 2)`` -> ``"Zen 5"``; None for a CPU the table does not know."""
    for first, end, name in MICROARCHITECTURES.get((vendor, family), ()):  # type: ignore[arg-type]
        if model is not None and first <= model < end:
            return name
    return None


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    """stdout of a short command, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s failed: %s", cmd[0], exc)
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, flags of interest and (x86) vendor, family, model number and microarchitecture
    from ``/proc/cpuinfo`` text (x86 or Arm); only the first processor's block is read."""
    model = None
    flags: set[str] = set()
    ids: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if model is None and key in ("model name", "hardware", "processor") and value and not value.isdigit():
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("vendor_id", "cpu family", "model") and key not in ids:
            ids[key] = value
    info: dict[str, Any] = {"model": model, "flags": [f for f in FLAGS_OF_INTEREST if f in flags]}
    if ids.get("cpu family", "").isdigit() and ids.get("model", "").isdigit():
        vendor, family, number = ids.get("vendor_id"), int(ids["cpu family"]), int(ids["model"])
        info.update(vendor=vendor, family=family, model_number=number,
                    microarchitecture=microarchitecture(vendor, family, number))
    return info


def parse_nvpmodel(text: str) -> str | None:
    """Power mode from ``nvpmodel -q`` ("NV Power Mode: MAXN" then the mode id) -> "MAXN (0)"."""
    match = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not match:
        return None
    ids = [ln.strip() for ln in text[match.end():].splitlines() if ln.strip().isdigit()]
    return f"{match.group(1)} ({ids[0]})" if ids else match.group(1)


def parse_jetson_clocks(text: str) -> bool | None:
    """Whether ``jetson_clocks --show`` output has every online CPU and the GPU pinned (min == max)."""
    pinned: list[bool] = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("cpu") or line.startswith("GPU ")):
            continue
        if "Online=0" in line:
            continue
        lo, hi = re.search(r"MinFreq=(\d+)", line), re.search(r"MaxFreq=(\d+)", line)
        if lo and hi:
            pinned.append(lo.group(1) == hi.group(1))
    return all(pinned) if pinned else None


def _cpu() -> dict[str, Any]:
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {"model": None, "flags": []}
    if not info["model"]:  # Arm kernels often print no model name; lscpu maps the part number (Cortex-A78AE)
        lscpu = _run(["lscpu"]) or ""
        match = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        info["model"] = match.group(1).strip() if match else platform.processor() or platform.machine()
    info["logical_cores"] = os.cpu_count()
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def _gpu() -> dict[str, Any] | None:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if out and out.strip():
        name, driver, memory = (p.strip() for p in out.strip().splitlines()[0].split(",")[:3])
        return {"name": name, "driver": driver, "memory": memory}
    return None


def _jetson() -> dict[str, Any] | None:
    try:
        model = DEVICE_TREE_MODEL.read_text().strip("\x00\n ")
    except OSError:
        return None
    info: dict[str, Any] = {"model": model}
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        info["l4t"] = release.read_text().splitlines()[0].strip("# ")
    query = _run(["nvpmodel", "-q"])
    info["power_mode"] = parse_nvpmodel(query) if query else None
    show = _run(["jetson_clocks", "--show"])
    info["clocks_locked"] = parse_jetson_clocks(show) if show else None
    if show is None and shutil.which("jetson_clocks"):
        info["clocks_note"] = "jetson_clocks --show needs root"
    return info


def machine_info() -> dict[str, Any]:
    """Everything the machine line says, as a dict for the JSON report."""
    info: dict[str, Any] = {"cpu": _cpu(), "os": f"{platform.system()} {platform.release()}",
                            "python": platform.python_version(), "libraries": tool_versions()}
    info["gpu"] = _gpu()
    info["jetson"] = _jetson()
    if info["jetson"] and not info["gpu"]:
        info["gpu"] = {"name": "integrated (Tegra)", "driver": info["jetson"].get("l4t")}
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line: ``AMD EPYC (Zen 4: family 25 model 17), 2 cores, avx512_vnni avx512_bf16, 23.5 GB RAM; ...``."""
    cpu = info["cpu"]
    cores = cpu.get("physical_cores") or cpu.get("logical_cores")
    name = cpu["model"]
    if cpu.get("family") is not None:
        ids = f"family {cpu['family']} model {cpu['model_number']}"
        name += f" ({cpu['microarchitecture']}: {ids})" if cpu.get("microarchitecture") else f" ({ids})"
    parts = [f"{name}, {cores} cores"]
    if cpu.get("usable_cores") and cpu["usable_cores"] != cpu.get("logical_cores"):
        parts[-1] += f" ({cpu['usable_cores']} usable)"
    if cpu.get("flags"):
        parts.append(" ".join(cpu["flags"]))
    if cpu.get("memory_gb"):
        parts.append(f"{cpu['memory_gb']} GB RAM")
    if info.get("gpu"):
        gpu = info["gpu"]
        parts.append(f"GPU {gpu['name']}" + (f" (driver {gpu['driver']})" if gpu.get("driver") else ""))
    if info.get("jetson"):
        jet = info["jetson"]
        locked = {True: "locked", False: "not locked", None: "unknown"}[jet.get("clocks_locked")]
        parts.append(f"{jet['model']}, power mode {jet.get('power_mode') or 'unknown'}, clocks {locked}")
    parts.append(info["os"])
    libs = info.get("libraries", {})
    parts.append(", ".join(f"{k} {v}" for k, v in libs.items()))
    return "; ".join(parts)
