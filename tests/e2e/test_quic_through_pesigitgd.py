"""HTTP/3 clients through pesigitgd to aioquic backends: the behaviours of the demo,
over IPv4 and over IPv6 (VIP, client and backends; the VIP in the backends' /64, the
backends probed and resolved over NDP by pesigitgd), with the kernel tier on as in
``make demo`` (xdp_decode = all: the four-pass config's 1-RTT packets decoded and
forwarded in XDP; Initials, and everything else, by the workers). The other e2e
files run with the tier off.

One environment per family (building it takes seconds); the tests run in file order
and the last two change it (a backend drains, then one fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pesigitg.demo.scenario import Demo, demo_environment


@pytest.fixture(scope="module", params=["4", "6"], ids=["ipv4", "ipv6"])
def demo(request) -> Iterator[Demo]:
    with demo_environment(say=lambda _: None, family=request.param,
                          xdp_decode="all") as environment:
        yield environment


def test_backends_are_probed_and_resolved_from_the_balancers_own_address(demo):
    config = demo.daemon.get("/config")
    family = f"ipv{demo.family}"
    assert config["sources"][family] == {"address": demo.net.lb.address,
                                         "chosen": "automatic"}
    assert config["sources"][family]["address"] != demo.vip
    assert {s["health"] for s in config["servers"]} == {"up (probed)"}
    assert {(s["mac_source"], s["mac"]) for s in config["servers"]} == \
        {("neighbour", b.mac.hex(":")) for b in demo.net.backends}


def test_connections_spread_over_all_backends_and_stay_on_theirs(demo):
    served = asyncio.run(demo.spread(connections=24, requests=3))
    assert sum(served.values()) == 24 and len(served) == 3


def test_a_migrating_client_keeps_its_backend(demo):
    in_xdp = demo.daemon.get("/stats")["kernel_tier"]["forwarded"]
    steps = asyncio.run(demo.migration())
    assert [s[0] for s in steps] == ["connected", "NAT rebinding: new port", "new address",
                                     "new connection ID"]
    assert steps[2][1].startswith(demo.net.client.addresses(demo.family)[1] + ":")
    assert len({backend for *_, backend in steps}) == 1
    stats = demo.daemon.get("/stats")
    assert stats["total"]["cid_routed_2"] > 0 and stats["total"]["dropped_not_quic"] == 0
    # The kernel tier forwarded the migrating connection's 1-RTT packets (this kernel
    # has the crypto kfuncs), counted as config 2's and as its backend's.
    tier = demo.daemon.get("/health")["xdp"]["kernel_tier"]
    assert tier["configs"]["2"]["path"] == "xdp", tier
    assert stats["kernel_tier"]["cid_routed_2"] == stats["kernel_tier"]["forwarded"] > in_xdp
    assert sum(b["kernel_tier"] for b in stats["backends"].values()) == \
        stats["kernel_tier"]["forwarded"]


def test_a_reload_under_live_connections_breaks_none(demo):
    mark = demo.daemon.mark()
    before, after = asyncio.run(demo.reload_under_load(connections=8))
    # Every connection answered after the reload, each by the backend it had before.
    assert len(after) == 8 and after == before and all(after)
    # The reload applied the new lb.toml (not kept the old one), with no worker lost.
    demo.daemon.wait_log("reloaded: ", after=mark)
    assert demo.daemon.get("/config")["routes"]["health"]["interval_ms"] == \
        demo.health_interval
    health = demo.daemon.get("/health")
    assert health["status"] == "ok" and health["workers"]["alive"] == \
        health["workers"]["expected"]


def test_a_draining_backend_keeps_its_connections_and_gets_no_new_ones(demo):
    victim = asyncio.run(demo.drain())
    servers = demo.daemon.get("/config")["servers"]
    assert [s["draining"] for s in servers if s["address"] == demo.host(victim).address] \
        == [True]


def test_a_failed_backend_is_taken_out_by_health_checks(demo):
    victim, _ = asyncio.run(demo.failure())
    server = next(s for s in demo.daemon.get("/config")["servers"]
                  if s["address"] == demo.host(victim).address)
    assert server["health"] == "down (probed)"
    # Its QUIC stack is gone: no version negotiation (an ICMP error, if any, is noted).
    assert server["last_check"].startswith("no version negotiation")
    demo.daemon.wait_log(f"backend {server['address']} is DOWN")
    assert demo.pool() == [b.address for b in demo.net.backends
                           if b.role not in demo.draining and b.role != victim]
