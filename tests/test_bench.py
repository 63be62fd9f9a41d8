"""Benchmark tests: tegrastats and Jetson parsers on real output, timing math, report writers,
the regression check, and one tiny end-to-end ``glia-edge bench`` run."""
from __future__ import annotations

import csv
import json
import math
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glia_edge.benchmarks import machine, tegrastats, timing
from glia_edge.benchmarks.configs import SKIP_NO_GPU, BenchConfig, build_matrix
from glia_edge.benchmarks.report import BenchReport, BenchRow, csv_rows, to_markdown, write_all
from glia_edge.benchmarks.checks import check_regressions, parse_min_speedup

# -- real tegrastats lines, as published by Jetson users and tools ---------------------------------
# Orin Nano, JetPack 6 (posted with nvidia-smi output from the same board).
ORIN_NANO = ("01-04-2025 16:02:59 RAM 1273/7620MB (lfb 1x4MB) SWAP 286/3810MB (cached 1MB) "
             "CPU [0%@1036,0%@1036,1%@1036,0%@1036,0%@729,0%@729] GR3D_FREQ 0% cpu@45.875C soc2@45.843C "
             "soc0@44.843C gpu@45.437C tj@46.312C soc1@46.312C VDD_IN 4968mW/4968mW VDD_CPU_GPU_CV 436mW/436mW "
             "VDD_SOC 1708mW/1708mW")
# Orin NX, JetPack 5 (two GPCs, CV sensors, two cores off).
ORIN_NX = ("01-24-2024 09:17:09 RAM 3503/7337MB (lfb 7x1MB) SWAP 430/3668MB (cached 1MB) "
           "CPU [11%@729,13%@729,9%@729,18%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@305 GR3D2_FREQ 0%@0 "
           "VIC_FREQ 115 APE 174 CV0@42.718C CPU@44.093C SOC2@42.625C SOC0@43.281C CV1@42.25C GPU@41.343C "
           "tj@46.968C SOC1@46.968C CV2@42.875C VDD_IN 4915mW/4915mW VDD_CPU_GPU_CV 449mW/449mW "
           "VDD_SOC 1431mW/1431mW")
# AGX Orin, JetPack 7: GPU load followed by per-GPC frequencies, temperatures as now/max.
AGX_ORIN_JP7 = ("07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) CPU [23%@2201,10%@2201] EMC_FREQ 3%@3199 "
                "GR3D_FREQ 0%@[1300,1300] NVENC0 off NVDEC0 off APE 174 cpu@52.968C/52.968C")
# Xavier NX, JetPack 5.
XAVIER_NX = ("RAM 2690/6854MB (lfb 6x1MB) SWAP 479/3427MB (cached 3MB) CPU [3%@1904,7%@1906,1%@1905,0%@1907,off,off] "
             "EMC_FREQ 0%@1600 GR3D_FREQ 0%@[510] VIC_FREQ 601 APE 150 AUX@39C CPU@39.5C AO@37.5C GPU@37.5C PMIC@50C "
             "VDD_IN 5079mW/5079mW VDD_CPU_GPU_CV 696mW/696mW VDD_SOC 1104mW/1104mW")
# AGX Xavier, JetPack 4.2 (DataDog agent's Jetson check tests): rails without VDD_ names or units.
AGX_XAVIER = ("RAM 1903/15692MB (lfb 3251x4MB) CPU [1%@1190,1%@1190,2%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] "
              "EMC_FREQ 0% GR3D_FREQ 0% AO@32.5C GPU@32C Tboard@32C Tdiode@34.75C AUX@31.5C CPU@33.5C thermal@32.9C "
              "PMIC@100C GPU 0/0 CPU 216/216 SOC 864/864 CV 0/0 VDDRQ 144/144 SYS5V 1889/1889")
# Nano (POM_5V_IN) and TX2 (VDD_IN, VDD_CPU, VDD_GPU without units), same source.
NANO = ("RAM 613/3964MB (lfb 634x4MB) SWAP 0/1982MB (cached 0MB) CPU [2%@102,1%@102,0%@102,0%@102] EMC_FREQ 0% "
        "GR3D_FREQ 0% PLL@39C CPU@40.5C PMIC@100C GPU@41C AO@46C thermal@41C POM_5V_IN 900/943 POM_5V_GPU 0/0 "
        "POM_5V_CPU 123/123")
TX2 = ("RAM 1345/7829MB (lfb 1290x4MB) SWAP 0/512MB (cached 0MB) CPU [2%@345,off,off,off,off,off] EMC_FREQ 13%@40 "
       "GR3D_FREQ 0%@114 APE 150 BCPU@35C MCPU@35C GPU@41C PLL@35C AO@35.5C Tboard@35C Tdiode@36C PMIC@100C "
       "thermal@35.5C VDD_IN 2003/2658 VDD_CPU 320/518 VDD_GPU 400/735 VDD_SOC 400/415 VDD_WIFI 0/0 VDD_DDR 240/348")


def test_tegrastats_orin_lines() -> None:
    nano = tegrastats.parse_line(ORIN_NANO)
    assert nano.timestamp == "01-04-2025 16:02:59"
    assert (nano.ram_used_mb, nano.ram_total_mb, nano.swap_used_mb) == (1273, 7620, 286)
    assert nano.cpu_loads == [0, 0, 1, 0, 0, 0] and nano.cpu_freqs_mhz == [1036] * 4 + [729] * 2
    assert nano.gpu_load == 0.0 and nano.gpu_freqs_mhz == []
    assert nano.temps_c["tj"] == pytest.approx(46.312) and nano.temps_c["gpu"] == pytest.approx(45.437)
    assert nano.rails_mw == {"VDD_IN": 4968, "VDD_CPU_GPU_CV": 436, "VDD_SOC": 1708}
    assert nano.input_power_mw() == ("VDD_IN", 4968)

    nx = tegrastats.parse_line(ORIN_NX)
    assert nx.cpu_loads == [11, 13, 9, 18, None, None] and nx.cpu_freqs_mhz[-1] is None
    assert nx.cpu_load_mean == pytest.approx(12.75)
    assert (nx.gpu_load, nx.gpu_freqs_mhz, nx.emc_load) == (0.0, [305], 0.0)
    assert "APE" not in nx.rails_mw and "VIC_FREQ" not in nx.rails_mw  # clocks are not power rails
    assert set(nx.temps_c) == {"CV0", "CPU", "SOC2", "SOC0", "CV1", "GPU", "tj", "SOC1", "CV2"}
    assert nx.input_power_mw() == ("VDD_IN", 4915)

    agx = tegrastats.parse_line(AGX_ORIN_JP7)
    assert (agx.gpu_load, agx.gpu_freqs_mhz) == (0.0, [1300, 1300])
    assert agx.temps_c == {"cpu": pytest.approx(52.968)} and agx.input_power_mw() is None


def test_tegrastats_xavier_and_older_lines() -> None:
    nx = tegrastats.parse_line(XAVIER_NX)
    assert nx.gpu_freqs_mhz == [510] and nx.input_power_mw() == ("VDD_IN", 5079)
    assert nx.rails_avg_mw["VDD_SOC"] == 1104

    agx = tegrastats.parse_line(AGX_XAVIER)
    assert agx.rails_mw == {"GPU": 0, "CPU": 216, "SOC": 864, "CV": 0, "VDDRQ": 144, "SYS5V": 1889}
    assert agx.temps_c["GPU"] == 32.0  # the GPU@32C temperature, not the GPU 0/0 rail
    rail, mw = agx.input_power_mw()
    assert rail.startswith("sum(") and mw == 216 + 864 + 144 + 1889
    assert agx.ram_used_mb == 1903 and agx.swap_used_mb is None

    nano = tegrastats.parse_line(NANO)
    assert nano.input_power_mw() == ("POM_5V_IN", 900) and nano.rails_avg_mw["POM_5V_IN"] == 943
    tx2 = tegrastats.parse_line(TX2)
    assert tx2.cpu_loads == [2, None, None, None, None, None] and tx2.gpu_freqs_mhz == [114]
    assert tx2.input_power_mw() == ("VDD_IN", 2003) and tx2.rails_mw["VDD_GPU"] == 400


def test_power_summary_gives_images_per_joule() -> None:
    samples = [tegrastats.parse_line(ORIN_NANO), tegrastats.parse_line(ORIN_NX)]
    summary = tegrastats.summarize(samples)
    assert summary.rail == "VDD_IN" and summary.samples == 2
    assert summary.mean_w == pytest.approx((4968 + 4915) / 2 / 1000)
    assert summary.max_temp_c == pytest.approx(46.968)
    assert summary.mean_gpu_load == 0.0 and summary.mean_cpu_load == pytest.approx((1 / 6 + 12.75) / 2)
    assert summary.images_per_joule(100, 2.0) == pytest.approx(100 / (summary.mean_w * 2.0))
    assert tegrastats.summarize([tegrastats.parse_line("RAM 1/2MB")]) is None


def test_tegrastats_sampler_reads_a_running_process(tmp_path: Path) -> None:
    # A stand-in for the tegrastats binary (not on this machine) that prints real lines.
    script = tmp_path / "tegrastats"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n"
                      f"assert sys.argv[1:3] == ['--interval', '50']\n"
                      f"for line in [{ORIN_NANO!r}, {ORIN_NX!r}] * 100:\n"
                      f"    print(line, flush=True); time.sleep(0.05)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    start = time.monotonic()
    with tegrastats.TegrastatsSampler(interval_ms=50, command=[str(script)]) as sampler:
        assert sampler.wait_for_samples(3, timeout=10)
    window = sampler.window(start, time.monotonic())
    assert len(window) >= 3 and window[0].rails_mw["VDD_IN"] == 4968
    assert tegrastats.summarize(window).rail == "VDD_IN"



def test_bench_power_rows_carry_load_and_temperature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.benchmarks import runner

    script = tmp_path / "tegrastats"  # a stand-in binary on PATH, printing a real Orin NX line
    script.write_text(f"#!{sys.executable}\nimport time\n"
                      f"for _ in range(400):\n    print({ORIN_NX!r}, flush=True); time.sleep(0.02)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    row = BenchRow("trt fp16", "trt", "fp16", "TensorRT")
    live = runner._Live(BenchConfig("trt", "fp16"), row, None,
                        runs={4: lambda: time.sleep(0.01)})
    note = runner._measure_power([live], runner.BenchOptions(batches=(4,), power_seconds=0.3))
    assert note and "VDD_IN" in note
    assert row.power_w == pytest.approx(4.915) and row.images_per_joule > 0
    assert (row.gpu_load, row.cpu_load, row.max_temp_c) == (0.0, pytest.approx(12.75), pytest.approx(46.968))
    report = BenchReport([row], {}, "Jetson", "glia-edge bench", {})
    assert "| GPU % | CPU % | max °C |" in to_markdown(report) and "| 0 | 13 | 47.0 |" in to_markdown(report)
    assert csv_rows(report)[0]["cpu_load"] == pytest.approx(12.75)

# -- Jetson power mode and clocks, CPU flags --------------------------------------------------------
JETSON_CLOCKS_TX2 = """SOC family:tegra186  Machine:quill
Online CPUs: 0,3-5
cpu0: Online=1 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=2035200 IdleStates: C1=1 c7=1
cpu1: Online=0 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=1113600 IdleStates: C1=1 c6=1 c7=1
cpu3: Online=1 Governor=schedutil MinFreq=345600 MaxFreq=2035200 CurrentFreq=1881600 IdleStates: C1=1 c7=1
GPU MinFreq=114750000 MaxFreq=1134750000 CurrentFreq=114750000
EMC MinFreq=40800000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=0
NV Power Mode: MAXP_CORE_ARM"""


def test_jetson_clock_and_power_mode_parsers() -> None:
    assert machine.parse_jetson_clocks(JETSON_CLOCKS_TX2) is False
    locked = JETSON_CLOCKS_TX2.replace("MinFreq=345600", "MinFreq=2035200").replace("MinFreq=114750000",
                                                                                     "MinFreq=1134750000")
    assert machine.parse_jetson_clocks(locked) is True
    assert machine.parse_jetson_clocks("no clocks here") is None
    assert machine.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == "MAXN (0)"
    assert machine.parse_nvpmodel("NV Power Mode: MODE_15W_6CORE\n2") == "MODE_15W_6CORE (2)"


def test_cpuinfo_flags_and_machine_line() -> None:
    # A VM masks the model name to "AMD EPYC" for Zen 4 and Zen 5 alike; CPUID family/model tell them apart.
    def amd(family: int, model: int) -> str:
        return (f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_int8\n"
                "processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 99\nmodel\t\t: 99\n")
    zen4 = machine.parse_cpuinfo(amd(25, 17))
    assert zen4 == {"model": "AMD EPYC", "flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"],
                    "vendor": "AuthenticAMD", "family": 25, "model_number": 17, "microarchitecture": "Zen 4"}
    assert machine.parse_cpuinfo(amd(26, 2))["microarchitecture"] == "Zen 5"
    assert machine.parse_cpuinfo(amd(25, 1))["microarchitecture"] == "Zen 3"
    assert machine.microarchitecture("GenuineIntel", 6, 0x8F) == "Sapphire Rapids"
    assert machine.microarchitecture("AuthenticAMD", 6, 0x8F) is None  # the vendor is part of the key
    unknown = machine.parse_cpuinfo(amd(99, 1))
    assert unknown["family"] == 99 and unknown["microarchitecture"] is None
    arm = machine.parse_cpuinfo("processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd asimddp i8mm bf16\n")
    assert arm == {"model": None, "flags": ["asimd", "asimddp", "i8mm", "bf16"]}

    def line_of(cpu: dict[str, Any]) -> str:
        return machine.machine_line({"cpu": {**cpu, "logical_cores": 2}, "os": "Linux", "libraries": {}})
    assert line_of(zen4).startswith("AMD EPYC (Zen 4: family 25 model 17), 2 cores; avx2 ")
    assert line_of(unknown).startswith("AMD EPYC (family 99 model 1), 2 cores")
    assert line_of({**arm, "model": "Cortex-A78AE"}).startswith("Cortex-A78AE, 2 cores; asimd")
    line = machine.machine_line(machine.machine_info())
    assert "cores" in line and "numpy" in line


# -- timing ----------------------------------------------------------------------------------------
def test_latency_percentiles_and_throughput() -> None:
    stats = timing.latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (stats.n, stats.min_ms, stats.mean_ms) == (100, pytest.approx(1.0), pytest.approx(50.5))
    assert stats.p50_ms == pytest.approx(50.5) and stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    tp = timing.throughput([0.5, 0.4, 10.0], batch=8, grid_crops=5)  # median 0.5 s
    assert (tp.images_per_s, tp.crops_per_s, tp.median_ms) == (16.0, 80.0, 500.0)
    with pytest.raises(ValueError):
        timing.latency_stats([])


def test_round_robin_alternates_and_drops_a_failing_run() -> None:
    assert timing.round_robin_order(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                            ["a", "b", "c"]]
    calls: list[str] = []
    failures: list[str] = []

    def broken() -> None:
        calls.append("x")
        raise RuntimeError("boom")

    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "x": broken}
    times = timing.measure_round_robin(runs, repeats=3, warmup=1, on_error=lambda n, e: failures.append(n))
    assert failures == ["x"] and set(times) == {"a", "b"}
    assert [len(times["a"]), len(times["b"])] == [3, 3] and all(t >= 0 for t in times["a"])
    assert calls == ["a", "b", "x", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotated rounds


# -- matrix, regression check, report writers -------------------------------------------------------
def test_matrix_always_has_the_baseline_and_skips_tensorrt_without_gpu() -> None:
    rows = build_matrix(["onnx", "openvino", "trt"], ["fp32", "bf16", "int8"], gpu_tensorrt=False)
    assert [r.name for r in rows] == ["torch fp32 eager", "onnx fp32", "onnx int8", "openvino fp32", "openvino bf16",
                                      "openvino int8", "trt fp32", "trt int8"]
    assert [r.skip for r in rows if r.target == "trt"] == [SKIP_NO_GPU] * 2
    assert BenchConfig("openvino", "bf16").artifact_precision == "fp32"
    torch_rows = build_matrix(["torch"], ["fp32", "bf16"], gpu_tensorrt=False)
    assert [r.key for r in torch_rows] == ["torch:fp32:eager", "torch:fp32:compile", "torch:bf16:autocast"]
    with pytest.raises(ValueError, match="unknown"):
        build_matrix(["tflite"], ["fp32"], gpu_tensorrt=False)


def test_matrix_adds_openvino_throughput_rows_that_load_with_the_throughput_hint() -> None:
    rows = build_matrix(["openvino"], ["fp32", "bf16", "int8"], gpu_tensorrt=False,
                        openvino_modes=("latency", "throughput"))
    assert [r.key for r in rows] == ["torch:fp32:eager", "openvino:fp32", "openvino:fp32:throughput", "openvino:bf16",
                                     "openvino:bf16:throughput", "openvino:int8", "openvino:int8:throughput"]
    bf16_tp = rows[4]
    assert bf16_tp.load_options() == {"inference_precision": "bf16", "mode": "throughput"}
    assert bf16_tp.artifact_precision == "fp32" and bf16_tp.label() == "OpenVINO (throughput hint)"
    assert rows[2].label() == "OpenVINO (f32 pinned, throughput hint)" and rows[1].load_options() == {}
    only_tp = build_matrix(["openvino"], ["int8"], gpu_tensorrt=False, openvino_modes=("throughput",))
    assert [r.key for r in only_tp] == ["torch:fp32:eager", "openvino:int8:throughput"]
    for bad in ((), ("fast",)):
        with pytest.raises(ValueError, match="OpenVINO modes: latency, throughput"):
            build_matrix(["openvino"], ["int8"], gpu_tensorrt=False, openvino_modes=bad)



def test_matrix_adds_openvino_dynamic_shape_rows_for_every_mode() -> None:
    """The backend compiles each batch size static by default; ``dynamic`` rows measure one
    dynamic-shape compilation beside them, under each performance hint asked for."""
    rows = build_matrix(["openvino"], ["int8"], gpu_tensorrt=False, openvino_modes=("latency", "throughput"),
                        openvino_shapes=("static", "dynamic"))
    assert [r.key for r in rows] == ["torch:fp32:eager", "openvino:int8", "openvino:int8:dynamic",
                                     "openvino:int8:throughput", "openvino:int8:throughput-dynamic"]
    assert rows[1].load_options() == {} and rows[2].load_options() == {"shapes": "dynamic"}
    assert rows[4].load_options() == {"mode": "throughput", "shapes": "dynamic"}
    assert rows[2].label() == "OpenVINO (dynamic shapes)" and rows[4].label() == "OpenVINO (throughput hint, dynamic shapes)"
    for bad in ((), ("fixed",)):
        with pytest.raises(ValueError, match="shapes: static, dynamic"):
            build_matrix(["openvino"], ["int8"], gpu_tensorrt=False, openvino_shapes=bad)


def test_matrix_is_driven_by_the_format_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A new row in FORMATS gets bench rows in its precisions' order, skipped without a GPU when it
    ``needs_gpu``, and artifact names from its first suffix (not ``.<name>``)."""
    from dataclasses import replace

    from glia_edge.benchmarks import artifacts, configs
    from glia_edge.export.exporter import default_output
    from glia_edge.formats import FORMATS

    monkeypatch.setitem(FORMATS, "ortx", replace(FORMATS["onnx"], name="ortx", label="ONNX Runtime X",
                                                 suffixes=(".ox",), precisions=("int8", "fp32"), needs_gpu=True))
    monkeypatch.setattr(configs, "TARGETS", (*configs.TARGETS, "ortx"))
    rows = build_matrix(["ortx", "onnx"], ["fp32", "int8"], gpu_tensorrt=False)
    assert [r.key for r in rows] == ["torch:fp32:eager", "onnx:fp32", "onnx:int8", "ortx:int8", "ortx:fp32"]
    assert [r.skip for r in rows if r.target == "ortx"] == [SKIP_NO_GPU] * 2 and rows[3].label() == "ONNX Runtime X"
    assert [r.skip for r in build_matrix(["ortx"], ["fp32"], gpu_tensorrt=True)] == [None, None]
    assert artifacts.artifact_output(tmp_path, "m", "ortx", "int8") == tmp_path / "m.int8.ox"
    assert artifacts.artifact_output(tmp_path, "m", "onnx", "fp16") == tmp_path / "m.fp16.onnx"
    assert artifacts.artifact_output(tmp_path, "m", "trt", "fp16") == tmp_path / "m.fp16.trt"  # a folder
    assert default_output(Path("c/m.safetensors"), "ortx", "fp32").name == "m.fp32.ox"
    assert default_output(Path("c/m.safetensors"), "onnx", "fp32").name == "m.fp32.onnx"
    assert default_output(Path("c/m.safetensors"), "openvino", "int8").name == "m.int8.openvino"


def test_a_target_without_rows_is_refused_not_left_out() -> None:
    """``--targets onnx --precisions bf16`` would measure the baseline alone: one line says why."""
    from glia_edge.cli import app

    with pytest.raises(ValueError, match=r"no rows for target\(s\) onnx \(fp32, fp16, int8\) at precisions bf16"):
        build_matrix(["torch", "onnx"], ["bf16"], gpu_tensorrt=False)
    # the default targets with --precisions bf16: the targets without BF16 are left out, with a warning
    assert {c.target for c in build_matrix(["torch", "onnx", "openvino"], ["bf16"], gpu_tensorrt=False)} == {
        "torch", "openvino"}
    result = CliRunner().invoke(app, ["bench", "--model", "m.safetensors", "--targets", "torch,trt",
                                      "--precisions", "bf16"])
    text = " ".join(result.output.replace("│", " ").split())  # unwrapped from the error box
    assert result.exit_code == 2 and "no rows for target(s) trt (fp32, fp16, int8) at precisions bf16" in text


def test_memory_probe_loads_the_row_with_its_own_backend_options() -> None:
    """A throughput or dynamic-shape row's peak RSS is that configuration's: the child process gets
    the row's OpenVINO options (a bad one fails there, naming the option)."""
    from glia_edge.benchmarks.memory import child_command, measure_peak_rss
    from glia_edge.weights import packaged_artifacts

    xml = next(a.path for a in packaged_artifacts("int8") if a.runtime == "openvino") / "model.xml"
    cmd = child_command(xml, backend_options={"mode": "throughput", "shapes": "dynamic"})
    assert cmd[-4:] == ["--option", "mode=throughput", "--option", "shapes=dynamic"]
    result = measure_peak_rss(xml, batch=2, iterations=1, threads=1, backend_options={"shapes": "dynamic"})
    assert result.peak_rss_mb > result.baseline_rss_mb > 0 and result.batches == 1
    with pytest.raises(RuntimeError, match="shapes must be one of static, dynamic"):
        measure_peak_rss(xml, batch=2, iterations=1, threads=1, backend_options={"shapes": "fixed"})

def _report() -> tuple[BenchReport, list[BenchConfig]]:
    configs = [BenchConfig("torch", "fp32", "eager"), BenchConfig("openvino", "int8"), BenchConfig("onnx", "int8"),
               BenchConfig("trt", "int8", skip=SKIP_NO_GPU)]
    tp = {8: {"batch": 8, "grid_crops": 1, "images_per_s": 10.0, "crops_per_s": 10.0, "median_ms": 800.0}}
    lat = {"n": 5, "mean_ms": 80.0, "p50_ms": 79.0, "p90_ms": 90.0, "p99_ms": 99.0, "min_ms": 75.0}
    rows = [BenchRow("torch fp32 eager", "torch", "fp32", "PyTorch eager", latency=lat, throughput=tp, speedup=1.0,
                     spearman=1.0, artifact_mb=20.0, peak_rss_mb=600.0),
            BenchRow("openvino int8", "openvino", "int8", "OpenVINO", latency=lat,
                     throughput={8: {**tp[8], "images_per_s": 40.0, "crops_per_s": 40.0}}, speedup=4.0,
                     spearman=0.995, artifact_mb=6.0, peak_rss_mb=150.0, srcc=float("nan")),
            BenchRow("onnx int8", "onnx", "int8", "ONNX Runtime", status="export failed: ValueError: bad graph"),
            BenchRow("trt int8", "trt", "int8", "TensorRT", status=SKIP_NO_GPU)]
    report = BenchReport(rows, {"cpu": {}}, "AMD EPYC, 2 cores", "glia-edge bench --model m.safetensors",
                         {"model": "m.safetensors", "notes": ["a note"], "checked": True})
    return report, configs


def test_regression_check_named_and_global_bounds() -> None:
    report, configs = _report()
    assert parse_min_speedup("2.5") == (2.5, {})
    assert parse_min_speedup("openvino:int8=3.5,onnx:int8=2.2") == (None, {"openvino:int8": 3.5, "onnx:int8": 2.2})
    assert check_regressions(report.rows, configs, "openvino:int8=3.5", 0.01) == []
    failures = check_regressions(report.rows, configs, "openvino:int8=4.5,onnx:int8=2", 0.001)
    assert any("openvino:int8: speed-up 4.00x < 4.5x" in f for f in failures)
    assert any(f.startswith("onnx:int8: not measured (export failed") for f in failures)
    assert any("openvino int8: Spearman 0.9950 drops 0.0050 > 0.001" in f for f in failures)
    assert check_regressions(report.rows, configs, "5", None) == ["openvino int8: speed-up 4.00x < 5x"]
    with pytest.raises(ValueError):
        parse_min_speedup("openvino:int8=")


def test_report_writers(tmp_path: Path) -> None:
    report, _ = _report()
    paths = write_all(report, tmp_path)
    assert set(paths) == {"markdown", "csv", "json", "png"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    assert "glia-edge bench --model m.safetensors" in md and "AMD EPYC, 2 cores" in md
    assert "| PyTorch eager | fp32 | 20.0 | ok | | 79.0 / 90.0 / 99.0 | 10.0 | 10.0 | 600 | 1.00x | 1.0000 |" \
        in md.replace("|  |", "| |")
    skipped = next(line for line in md.splitlines() if SKIP_NO_GPU in line)
    assert not any(ch.isdigit() for ch in skipped.replace("TensorRT", "").replace("int8", ""))
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [r.name for r in report.rows]
    assert float(rows[1]["b8_crops_per_s"]) == 40.0 and rows[2]["b8_crops_per_s"] == ""
    data = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["rows"][1]["throughput"]["8"]["images_per_s"] == 40.0 and data["command"] == report.command
    assert data["rows"][1]["srcc"] is None and rows[1]["srcc"] == ""  # NaN is written as empty, never "NaN"
    assert csv_rows(report)[0]["b1_p99_ms"] == 99.0
    assert "Regression check passed." in to_markdown(report)


# -- one tiny end-to-end run -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_run(tiny_checkpoint: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    import torch

    from glia_edge.cli import app

    out = tmp_path_factory.mktemp("bench")
    # One thread: on a shared 2-core machine PyTorch's OpenMP threads slow down many-fold under load.
    args = ["bench", "--model", str(tiny_checkpoint), "--targets", "torch,onnx,openvino", "--precisions", "fp32,int8",
            "--batch", "1,2", "--repeats", "2", "--warmup", "1", "--threads", "1", "--images", str(image_dir),
            "--calib", str(image_dir), "--output", str(out), "--no-compile", "--profile"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the exports' own accuracy gates run in this process too
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    return result, out, args


def test_bench_end_to_end(bench_run: tuple) -> None:
    result, out, args = bench_run
    assert result.exit_code == 0, result.output
    for name in ("bench.md", "bench.csv", "bench.json", "bench.png"):
        assert (out / name).is_file()
    data = json.loads((out / "bench.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["torch fp32 eager", "onnx fp32", "onnx int8", "openvino fp32", "openvino int8"]
    assert all(r["status"] == "ok" for r in rows.values()), {n: r["status"] for n, r in rows.items()}
    assert rows["torch fp32 eager"]["speedup"] == 1.0 and rows["torch fp32 eager"]["spearman"] == pytest.approx(1.0)
    for row in rows.values():
        lat = row["latency"]
        assert lat["n"] == 2 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        tp = row["throughput"]["2"]
        assert tp["crops_per_s"] == pytest.approx(tp["images_per_s"]) and tp["images_per_s"] > 0
        assert row["speedup"] == pytest.approx(tp["crops_per_s"] / rows["torch fp32 eager"]["throughput"]["2"]
                                               ["crops_per_s"])
        assert 0 < row["peak_rss_mb"] < 4000 and row["artifact_mb"] > 0 and row["load_s"] > 0
    assert rows["onnx fp32"]["spearman"] > 0.999 and rows["openvino fp32"]["max_abs_diff"] < 0.5
    assert rows["openvino int8"]["spearman"] > 0.8 and not math.isnan(rows["onnx int8"]["spearman"])
    assert rows["onnx int8"]["artifact_mb"] < rows["onnx fp32"]["artifact_mb"]
    assert rows["onnx fp32"]["peak_rss_mb"] < rows["torch fp32 eager"]["peak_rss_mb"]  # no torch in that process
    assert data["settings"]["eval_images"] == 20 and data["machine_line"]
    with open(out / "bench.csv", newline="") as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == list(rows)
    md = (out / "bench.md").read_text()
    assert "glia-edge bench --model" in md and "--batch 1,2" in md and "--threads 1" in md
    # the recommendation is judged on the selection set (here --calib, which is --images: said so), in every report
    assert str(args[args.index("--calib") + 1]) in data["settings"]["selection_set"]
    assert "shares 20 of its 20 images with the held-out set" in md
    assert rows["onnx fp32"]["selection_spearman"] > 0.999 and rows["onnx fp32"]["selection_max_delta_share"] < 0.01
    assert rows["onnx fp32"]["max_delta_share"] == pytest.approx(rows["onnx fp32"]["max_abs_diff"]
                                                                 / data["settings"]["score_range"])
    assert data["recommendation"].startswith("recommendation: ") and data["recommendation"] in md
    assert "judged on the calibration images" in data["recommendation"]
    # --profile: each runtime's own profiler names the operators that dominate
    assert "aten::" in rows["torch fp32 eager"]["top_ops"] and "MatMul" in rows["onnx fp32"]["top_ops"]
    assert "FullyConnected" in rows["openvino int8"]["top_ops"] and "Top operators" in md
    # ... under the row's own config: the FP32 IR pinned to f32 (on AMX CPUs OpenVINO's default is BF16)
    assert "FullyConnected" in rows["openvino fp32"]["top_ops"] and "bf16" not in rows["openvino fp32"]["top_ops"]


def test_bench_regression_check_exit_code(bench_run: tuple) -> None:
    from glia_edge.cli import app

    _, out, args = bench_run
    model, images = args[args.index("--model") + 1], args[args.index("--images") + 1]
    fast = ["bench", "--model", model, "--targets", "torch,onnx", "--precisions", "fp32", "--batch", "1,2",
            "--repeats", "1", "--warmup", "1", "--threads", "1", "--images", images, "--calib", images,
            "--output", str(out), "--no-compile", "--no-memory"]
    artifact = Path(json.loads((out / "bench.json").read_text())["rows"][1]["artifact"])
    stamp = artifact.stat().st_mtime_ns
    failing = CliRunner().invoke(app, fast + ["--min-speedup", "onnx:fp32=1000"])
    assert failing.exit_code == 1, failing.output
    assert "onnx:fp32: speed-up" in failing.output
    report = json.loads((out / "bench.json").read_text())
    assert report["checks"] and report["rows"][1]["status"] == "ok"
    assert artifact.stat().st_mtime_ns == stamp  # same checkpoint and settings: reused, not re-exported
    passing = CliRunner().invoke(app, fast + ["--max-drop", "0.01"])
    assert passing.exit_code == 0, passing.output


def test_bench_rejects_bad_options(tmp_path: Path) -> None:
    from glia_edge.cli import app

    result = CliRunner().invoke(app, ["bench", "--model", "m.safetensors", "--targets", "tflite"])
    assert result.exit_code == 2 and "tflite" in result.output
    missing = CliRunner().invoke(app, ["bench", "--model", "/no/such/model.safetensors", "--targets", "torch",
                                       "--output", str(tmp_path)])
    assert missing.exit_code == 2 and "no/such/model" in missing.output
    assert not any(tmp_path.iterdir())  # nothing written for a run that cannot start
    (tmp_path / "afile").write_text("")
    artifact = "glia_edge/weights/glia_vit_nano.synthetic.fp32.onnx"
    for args, words in [(["--preset", "nosuch"], "unknown preset 'nosuch'"),
                        (["--output", str(tmp_path / "afile")], "is a file"),
                        (["--max-drop", "nan"], "--max-drop must be between 0 and 2"),
                        (["--max-drop", "-0.5"], "--max-drop must be between 0 and 2"),
                        (["--min-speedup", "nan"], "finite ratio above 0"),  # nan never fails: the check was off
                        (["--min-speedup", "onnx:int8=-1"], "finite ratio above 0"),
                        (["--export-option", "bogus_opt=1"], "unknown export option(s) bogus_opt"),
                        (["--end-to-end", artifact, "--e2e-files", str(tmp_path / "none")], "not a folder of images"),
                        (["--end-to-end", artifact, "--e2e-sizes", "", "--frames", ""], "nothing to measure"),
                        (["--device", "cudax"], "auto, cpu or cuda[:N]")]:
        result = CliRunner().invoke(app, ["bench", *args])
        flat = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2 and words in flat, (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_bench_on_a_gpu_pytorch_cannot_see_stops_before_any_work(tmp_path: Path) -> None:
    import torch

    from glia_edge.cli import app

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--preset", "glia_vit_nano", "--targets", "torch", "--precisions", "fp32",
                                      "--device", f"cuda:{gpus}", "--output", str(out)])
    assert result.exit_code == 2 and f"PyTorch sees {gpus} CUDA GPU(s)" in result.output, result.output
    assert not out.exists()  # before, the baseline row failed after the export and the run exited 0


def test_preset_without_model_builds_a_random_weight_checkpoint_once(tmp_path: Path) -> None:
    from glia_edge.benchmarks.runner import BenchOptions, checkpoint_to_bench
    from glia_edge.checkpoint import read_checkpoint_meta

    opts = BenchOptions(preset="glia_vit_tiny")
    path, name, random_weights = checkpoint_to_bench(opts, tmp_path)
    assert random_weights and name == "glia_vit_tiny (random weights)" and path.parent == tmp_path
    assert read_checkpoint_meta(path).preset == "glia_vit_tiny"
    stamp = path.stat().st_mtime_ns
    assert checkpoint_to_bench(opts, tmp_path)[0] == path and path.stat().st_mtime_ns == stamp  # reused


def test_export_options_are_parsed_as_literals() -> None:
    import typer

    from glia_edge.cli.bench_cmd import _export_options

    parsed = _export_options(["keep_head_float=True", "smooth_quant_alpha=0.15", "timing_cache=None",
                              "exclude_nodes=['/a', '/b']", "exporter=dynamo"])
    assert parsed == {"keep_head_float": True, "smooth_quant_alpha": 0.15, "timing_cache": None,
                      "exclude_nodes": ["/a", "/b"], "exporter": "dynamo"}
    with pytest.raises(typer.BadParameter):
        _export_options(["no-equals-sign"])
    with pytest.raises(typer.BadParameter, match="unknown export option"):
        _export_options(["x=None"])


def test_each_export_gets_only_the_options_it_reads(tmp_path: Path) -> None:
    """One --export-option serves every row: the OpenVINO INT8 export gets smooth_quant_alpha, the
    ONNX exports (which refuse an option they would ignore) do not."""
    from glia_edge.benchmarks.artifacts import prepare_artifacts

    checkpoint = tmp_path / "m.safetensors"
    checkpoint.write_bytes(b"")
    calls: dict[tuple[str, str], dict] = {}

    def fake_export(ckpt: Path, *, target: str, precision: str, output: Path, **kwargs: Any) -> Any:
        calls[(target, precision)] = kwargs
        raise RuntimeError("not exported in this test")

    configs = build_matrix(["torch", "onnx", "openvino"], ["fp32", "int8"], gpu_tensorrt=False)
    prepare_artifacts(checkpoint, configs, tmp_path / "artifacts", calib=tmp_path, crops=1, max_batch=8,
                      export_options={"smooth_quant_alpha": 0.3}, reuse=False, export_fn=fake_export)
    assert calls[("openvino", "int8")]["smooth_quant_alpha"] == 0.3
    assert all("smooth_quant_alpha" not in calls[key] for key in calls if key != ("openvino", "int8"))
    assert ("onnx", "int8") in calls and ("openvino", "fp32") in calls
