"""Artifacts of the tiny test checkpoint, exported once per test session and shared by the runtime tests.

Not a conftest: ``test_runtimes_contract.py`` and ``test_no_torch.py`` import :func:`exported`.
The cache lives in this module, so each (target, batch mode) is exported once per process even
though both test modules ask for it.
"""
from __future__ import annotations

import functools
from pathlib import Path

STATIC_BATCH = 4


def exported(checkpoint: Path, target: str, static: bool = False) -> Path:
    """``glia_edge.export`` of ``checkpoint`` at fp32 for ``target``; returns the loadable path.

    Written beside the checkpoint (inside pytest's temporary folder). ``static`` exports a fixed
    batch of :data:`STATIC_BATCH` instead of a dynamic batch axis.
    """
    return _exported(Path(checkpoint), target, bool(static))


@functools.lru_cache(maxsize=None)
def _exported(checkpoint: Path, target: str, static: bool) -> Path:
    from glia_edge.export import export
    from glia_edge.formats import FORMATS

    fmt = FORMATS[target]
    name = f"{checkpoint.stem}.{target}.{'static' if static else 'dynamic'}"
    output = checkpoint.parent / (name + fmt.suffixes[0] if fmt.single_file else name)  # a file or a folder
    options = {"dynamic": False, "batch": STATIC_BATCH} if static else {}
    return export(checkpoint, target=target, precision="fp32", output=output, **options).path
