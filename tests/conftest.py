"""Shared fixtures: privilege tiers and the two QUIC-LB decoder implementations."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

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


def aes_paths() -> tuple[str, ...]:
    """The keyed-decode paths this CPU can run (scalar, aesni, vaes), each forced in turn
    by the tests that decode in batches."""
    from pesigitg._fastpath import aes_paths_available

    return aes_paths_available()


@contextlib.contextmanager
def forced_aes_path(name: str) -> Iterator[None]:
    from pesigitg._fastpath import set_aes_path

    set_aes_path(name)
    try:
        yield
    finally:
        set_aes_path(None)


def _companion_cids(configs: Sequence[CidConfig], width: int) -> list[bytes]:
    """CIDs of every config with assorted server IDs and nonces, cut to ``width``: the
    other lanes of a batch, so that a CID under test shares its AES with other keys,
    other lengths and other modes."""
    import random

    rng = random.Random(width)
    out = []
    for i in range(23):
        config = configs[i % len(configs)]
        sid = rng.randbytes(config.server_id_len)
        cid = config.encode(sid, rng.randbytes(config.nonce_len)) + rng.randbytes(20)
        out.append(cid[:width])
    return out


def batch_decoder(path: str) -> Decode:
    """A decode that puts the CID in the middle of a batch of others and decodes the
    batch together on ``path``; every other row must decode as the reference does."""
    def decode(configs: Sequence[CidConfig], cid: bytes) -> tuple[int, bytes] | None:
        import numpy as np

        from pesigitg._fastpath import SERVER_ID_MAX, CidDecoder

        cid = cid[:20]
        if not cid:
            return _fastpath_decode(configs, cid)
        rows = _companion_cids(configs, len(cid))
        middle = len(rows) // 2
        rows.insert(middle, cid)
        cids = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), len(cid))
        config_ids = np.empty(len(rows), dtype=np.int8)
        server_ids = np.zeros((len(rows), SERVER_ID_MAX), dtype=np.uint8)
        with forced_aes_path(path):
            CidDecoder(configs).decode_batch(cids, config_ids, server_ids)
        got = [None if config_ids[i] < 0 else
               (int(config_ids[i]), bytes(server_ids[i][:_sid_len(configs, config_ids[i])]))
               for i in range(len(rows))]
        assert got == [_reference_decode(configs, row) for row in rows]
        return got[middle]
    return decode


def _sid_len(configs: Sequence[CidConfig], config_id: int) -> int:
    return next(c.server_id_len for c in configs if c.config_id == config_id)


@pytest.fixture(params=["reference", "fastpath", *(f"batch-{p}" for p in aes_paths())])
def decode(request: pytest.FixtureRequest) -> Decode:
    """The same test body runs against the reference codec and the Cython decoder, one
    CID alone and in a batch on every AES path (scalar, AES-NI, VAES) forced in turn."""
    if request.param == "reference":
        return _reference_decode
    if request.param == "fastpath":
        return _fastpath_decode
    return batch_decoder(request.param.removeprefix("batch-"))


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
