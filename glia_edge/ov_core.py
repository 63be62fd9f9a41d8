"""The process's one OpenVINO ``Core``: every OpenVINO user in glia-edge shares it.

Why one, kept until the process exits: on Linux CPUs with AMX, each Core's CPU plugin gives the
main thread a larger alternate signal stack when it first compiles a model that may use AMX
(BF16, INT8), and puts the previous stack back when the Core is destroyed. Cores destroyed in any
other order than the reverse of their creation leave the main thread's signal stack pointing at
memory already unmapped, and the next signal handled there (Ctrl-C, ``kill -USR1`` to
``glia-edge watch``, Python's crash report) kills the process with SIGSEGV. One Core that never
goes away installs that stack once; Cores that libraries create and drop inside one call (NNCF's)
nest inside it and restore it correctly. OpenVINO's Core is thread-safe.
"""
from __future__ import annotations

import threading
from typing import Any

_CORE: Any = None
_LOCK = threading.Lock()


def shared_core() -> Any:
    """The shared ``openvino.Core`` (created on first use; raises ImportError without openvino)."""
    global _CORE
    with _LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE
