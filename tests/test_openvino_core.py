"""Every OpenVINO user in the process shares one Core, so signals keep working after backends close.

On Linux CPUs with AMX, each Core's CPU plugin gives the main thread a larger alternate signal
stack and puts the previous one back when the Core is destroyed. With a Core per backend, two
BF16/INT8 backends dropped in creation order left the main thread's signal stack pointing at
unmapped memory, and the next signal with a Python handler killed the process with SIGSEGV (it
crashed this suite at ``kill -USR1``). On CPUs without AMX the plugin leaves the signal stack
alone and the subprocess check passes either way.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("openvino")

from glia_edge.ov_core import shared_core  # noqa: E402
from glia_edge.weights import packaged_artifacts  # noqa: E402

INT8_IR = next(a.path for a in packaged_artifacts("int8") if a.runtime == "openvino")  # the shipped INT8 IR

# Two INT8 backends (AMX kernels where the CPU has them), dropped first-created-first, then a
# real SIGUSR1 to this process with a Python handler, which runs on the main thread's signal stack.
_SCRIPT = f"""
import gc, os, signal
import numpy as np
import glia_edge

first = glia_edge.load({str(INT8_IR)!r})
second = glia_edge.load({str(INT8_IR)!r})
first.predict_batch(np.zeros((1, 3, 224, 224), np.float32))
first.close(); del first; gc.collect()
second.close(); del second; gc.collect()
handled = []
signal.signal(signal.SIGUSR1, lambda *_: handled.append(True))
os.kill(os.getpid(), signal.SIGUSR1)
print("handled" if handled else "not handled")
"""


def _signal_stack_is_mapped() -> bool:
    """Whether this thread's alternate signal stack, if any, lies in mapped memory (Linux)."""
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    stack = StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    if not stack.ss_sp:
        return True
    with open("/proc/self/maps") as maps:
        spans = [[int(x, 16) for x in line.split()[0].split("-")] for line in maps]
    return any(lo <= stack.ss_sp and stack.ss_sp + stack.ss_size <= hi for lo, hi in spans)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_backends_share_the_process_core_and_leave_a_valid_signal_stack() -> None:
    import gc

    import glia_edge

    first, second = glia_edge.load(INT8_IR), glia_edge.load(INT8_IR)
    first.close(), second.close()  # first created, first closed
    del first, second
    gc.collect()
    assert shared_core() is shared_core()
    assert _signal_stack_is_mapped()


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_a_signal_after_backends_closed_in_creation_order_is_handled() -> None:
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().splitlines()[-1] == "handled"
