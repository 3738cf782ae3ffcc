"""Shared fixtures: privilege tiers and the two QUIC-LB decoder implementations."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest

from pesigitg.routing.quiclb import CidConfig, first_octet_config_id

Decode = Callable[[Sequence[CidConfig], bytes], "tuple[int, bytes] | None"]


def _reference_decode(configs: Sequence[CidConfig], cid: bytes) -> tuple[int, bytes] | None:
    if not cid:
        return None
    by_id = {c.config_id: c for c in configs}
    config = by_id.get(first_octet_config_id(cid))
    if config is None:
        return None
    try:
        server_id, _nonce = config.decode(cid[:20])
    except ValueError:
        return None
    return config.config_id, server_id


def _fastpath_decode(configs: Sequence[CidConfig], cid: bytes) -> tuple[int, bytes] | None:
    from pesigitg._fastpath import CidDecoder

    return CidDecoder(configs).decode(cid[:20])


@pytest.fixture(params=["reference", "fastpath"])
def decode(request: pytest.FixtureRequest) -> Decode:
    """The same test body runs against the reference codec and the Cython decoder."""
    return _reference_decode if request.param == "reference" else _fastpath_decode


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: CAP_NET_ADMIN and CAP_BPF")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
