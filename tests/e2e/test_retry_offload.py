"""HTTP/3 through pesigitgd's Retry offload: real aioquic clients (which check the
original_destination_connection_id and retry_source_connection_id transport
parameters and abort when they are wrong) and aioquic backends taking the balancer's
tokens with the keys of the same lb.toml."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from pesigitg.demo.scenario import Demo, demo_environment
from pesigitg.testing.netns import inside


@pytest.fixture(scope="module")
def always() -> Iterator[Demo]:
    with demo_environment(say=lambda _: None, retry={"mode": "always"}) as environment:
        yield environment


def stats(demo: Demo) -> dict[str, int]:
    assert demo.daemon is not None
    return demo.daemon.get("/stats")["total"]


def test_every_connection_goes_through_one_retry_and_succeeds(always):
    before = stats(always)
    served = asyncio.run(always.new_connections(6, requests=2))
    assert sum(served.values()) == 6
    after = stats(always)
    assert after["retry_sent"] - before["retry_sent"] == 6
    assert after["retry_token_valid"] - before["retry_token_valid"] >= 6
    assert after["retry_token_invalid"] == after["retry_token_expired"] == 0
    assert after["retry_active"] == 1


def test_a_connection_that_came_through_a_retry_migrates_like_any_other(always):
    steps = asyncio.run(always.migration())
    assert len({backend for *_, backend in steps}) == 1


def tokenless_initial() -> bytes:
    """A client Initial without a token, padded to 1200 octets."""
    head = (b"\xc3" + struct.pack("!I", 1) + b"\x08" + os.urandom(8) + b"\x08"
            + os.urandom(8) + b"\x00")
    return head + os.urandom(1200 - len(head))


@pytest.fixture(scope="module")
def load() -> Iterator[Demo]:
    with demo_environment(say=lambda _: None,
                          retry={"mode": "load", "load_trigger": 100}) as environment:
        yield environment


def test_in_load_mode_retries_start_above_the_trigger_and_stop_below(load):
    assert load.daemon is not None
    served = asyncio.run(load.new_connections(4))
    assert sum(served.values()) == 4
    calm = stats(load)
    assert calm["retry_sent"] == 0 and calm["retry_active"] == 0 and calm["initials"] >= 4
    # A flood of tokenless Initials, ten times the trigger, for a second and a half.
    with inside(load.net.client.ns):
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            flood.sendto(tokenless_initial(), (load.vip, 443))
            time.sleep(0.001)
        busy = stats(load)
        assert busy["retry_active"] == 1 and busy["retry_sent"] > 0
        # A real client now comes through a Retry.
        assert sum(asyncio.run(load.new_connections(1)).values()) == 1
        assert stats(load)["retry_token_valid"] > busy["retry_token_valid"]
    finally:
        flood.close()
    # Calm again: after a second under half the trigger, no more Retries.
    load.daemon.wait_until(lambda: stats(load)["retry_active"] == 0, timeout=5,
                           what="the offload inactive again")
    quiet = stats(load)
    assert sum(asyncio.run(load.new_connections(2)).values()) == 2
    assert stats(load)["retry_sent"] == quiet["retry_sent"]
