"""Shared fixtures: privilege tiers and the two QUIC-LB decoder implementations."""

from __future__ import annotations

import contextlib
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


def leftover_processes() -> set[int]:
    """What the tests started and left running: processes in a network namespace the run
    made (daemons, workers, successors, BGP speakers, health checks) and descendants of
    this process. Nothing else on the host is ours, whatever its name: a balancer that
    runs beside the suite is never touched."""
    import psutil

    from pesigitg.testing.netns import processes_in_ours

    me = psutil.Process()
    children = {p.pid for p in me.children(recursive=True)}
    return (processes_in_ours() | children) - {me.pid}


@pytest.fixture(scope="session", autouse=True)
def _nothing_outlives_the_suite() -> object:
    """Every process a test starts is stopped by the test: one left behind (a successor
    after a restart, a worker, a BGP daemon) fails the run, and is killed by PID."""
    yield
    import signal
    import time

    deadline = time.monotonic() + 5
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftover_processes()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after the suite: {sorted(left)}"
