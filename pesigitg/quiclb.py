"""``pesigitg.quiclb``: the QUIC-LB codec's public import path (``CidConfig``,
``CidEncoder``); the code lives in :mod:`pesigitg.routing.quiclb`."""

from pesigitg.routing.quiclb import *  # noqa: F403
from pesigitg.routing.quiclb import __all__  # noqa: F401
