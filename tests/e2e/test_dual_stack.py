"""One pesigitgd serving an IPv4 VIP and an IPv6 VIP at once, with backends it knows
by IPv6 (b1, b3) and by IPv4 (b2) addresses: probes and neighbour resolution in both
families, from the balancer's own address of each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pesigitg.demo.scenario import Demo, demo_environment


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    with demo_environment(say=lambda _: None, family="mixed") as environment:
        yield environment


def test_each_family_is_probed_from_its_own_non_vip_address(demo):
    config = demo.daemon.get("/config")
    assert config["sources"] == {
        "ipv4": {"address": "10.77.0.2", "chosen": "automatic"},
        "ipv6": {"address": "fd00:77::2", "chosen": "automatic"}}
    assert [(s["address"], s["health"], s["mac_source"]) for s in config["servers"]] == [
        ("fd00:77::21", "up (probed)", "neighbour"), ("10.77.0.22", "up (probed)", "neighbour"),
        ("fd00:77::23", "up (probed)", "neighbour")]
    assert config["steering"]["vips"] == ["10.77.0.100", "fd00:77::100"]


def test_both_vips_spread_connections_over_every_backend_and_keep_them(demo):
    assert demo.vip == "fd00:77::100"
    # Clients choose their DCIDs at random: with 12 connections one of three backends
    # got none in about 2 % of runs per family; with 30, in 3 of a million.
    ipv6 = asyncio.run(demo.spread(connections=30, requests=2))
    ipv4 = asyncio.run(demo.other_family(connections=30))     # includes a migration
    assert len(ipv6) == len(ipv4) == 3
    assert sum(ipv6.values()) == sum(ipv4.values()) == 30


def test_a_migration_over_ipv6_keeps_its_backend(demo):
    steps = asyncio.run(demo.migration())
    assert len({backend for *_, backend in steps}) == 1
    assert steps[2][1].startswith("fd00:77::11:")


def test_a_failed_ipv6_backend_is_taken_out_and_the_others_keep_serving(demo):
    victim, _ = asyncio.run(demo.failure())        # the last backend: b3, over IPv6
    assert victim == "b3"
    health = {s["address"]: s["health"] for s in demo.daemon.get("/config")["servers"]}
    assert health == {"fd00:77::21": "up (probed)", "10.77.0.22": "up (probed)",
                      "fd00:77::23": "down (probed)"}
