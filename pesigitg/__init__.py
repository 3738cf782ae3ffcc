"""pesigitg: a QUIC-aware layer-4 load balancer (XDP steering, AF_XDP workers, QUIC-LB).

The codec's names are imported on first use, so that ``pesigitgd`` can block its
start-up signals before anything heavy is loaded (pesigitg/daemon/entry.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CidConfig", "CidEncoder", "NonceSpaceExhausted", "__version__"]

if TYPE_CHECKING:
    from pesigitg.routing.quiclb import CidConfig, CidEncoder, NonceSpaceExhausted


def __getattr__(name: str) -> Any:
    if name in ("CidConfig", "CidEncoder", "NonceSpaceExhausted"):
        from pesigitg.routing import quiclb

        return getattr(quiclb, name)
    raise AttributeError(f"module 'pesigitg' has no attribute {name!r}")
