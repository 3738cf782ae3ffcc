"""pesigitg: a QUIC-aware layer-4 load balancer (XDP steering, AF_XDP workers, QUIC-LB)."""

from pesigitg.routing.quiclb import CidConfig, CidEncoder, NonceSpaceExhausted

__version__ = "0.1.0"

__all__ = ["CidConfig", "CidEncoder", "NonceSpaceExhausted", "__version__"]
