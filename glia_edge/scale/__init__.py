"""Scale-out on Ray: batch scoring with Ray Data and online scoring with Ray Serve.

Needs ``pip install "glia-edge[ray]"``. Nothing in this package imports Ray at import time; the
``glia-edge batch`` and ``glia-edge serve`` commands import it when they run. Kept out of the
package name ``ray`` on purpose, so ``import ray`` always means Ray.
"""
from __future__ import annotations

from glia_edge.errors import BackendUnavailableError


def require_ray() -> None:
    """Raise a one-line error when Ray (with Data and Serve) is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f'Ray is not installed ({exc}); pip install "glia-edge[ray]"') from None
