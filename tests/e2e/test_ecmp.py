"""Two pesigitgd balancers behind a router running BIRD 2 with ECMP, each announcing
the VIPs with ExaBGP from contrib/bgp while its health check passes; a client, three
aioquic backends, Direct Server Return, IPv4 and IPv6 (pesigitg.demo.ecmp)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator

import pytest

from pesigitg.demo import bgp
from pesigitg.demo.ecmp import HASH_KEY, EcmpDemo, ecmp_environment, pesigitg_ctl


@pytest.fixture(scope="module")
def demo() -> Iterator[EcmpDemo]:
    assert bgp.missing_tools() is None, f"make test installs them: {bgp.missing_tools()}"
    with ecmp_environment(say=lambda _: None) as environment:
        asyncio.run(environment.announce())
        yield environment


def test_both_balancers_are_next_hops_and_hold_the_same_route_table(demo):
    for vip in demo.net.vips.values():
        assert demo.next_hops(vip) == sorted(b.next_hop(vip) for b in demo.balancers.values())
    configs = [b.daemon.get("/config") for b in demo.balancers.values()]
    assert configs[0]["route_table"]["digest"] == configs[1]["route_table"]["digest"]
    assert configs[0]["interface_mac"] != configs[1]["interface_mac"]
    assert configs[0]["routes"]["fallback"]["hash_key"] == "set"
    assert HASH_KEY not in json.dumps(configs[0])
    shown = [subprocess.run([pesigitg_ctl(), "-s", str(b.daemon.status_socket), "config"],
                            capture_output=True, text=True, check=True).stdout
             for b in demo.balancers.values()]
    digest = configs[0]["route_table"]["digest"]
    assert all(f"route table digest: {digest}" in text and "fallback hash: keyed" in text
               and HASH_KEY not in text for text in shown)


def test_connections_spread_over_both_balancers_in_both_families(demo):
    carried = asyncio.run(demo.spread(connections=24, requests=2))
    assert set(carried) == set(demo.balancers) and sum(carried.values()) == 48


def test_a_client_whose_path_moves_to_the_other_balancer_keeps_its_backend(demo):
    moves = asyncio.run(demo.move())
    assert [(vip, first != other) for vip, first, other, _ in moves] == [
        (vip, True) for vip in demo.net.vips.values()]


def test_a_hitless_restart_keeps_the_balancer_announced_and_every_request_answered(demo):
    """`pesigitg-ctl restart` must not look like a failure to the BGP health check:
    the router keeps both next hops, the live connections their answers and backends."""
    result = asyncio.run(demo.restart("lb1"))
    assert result.pid != result.previous_pid
    assert result.fewest_hops == {vip: 2 for vip in demo.net.vips.values()}
    assert result.requests.count()["failed"] == 0 and result.requests.count()["ok"] > 0
    assert result.requests.moved == 0


@pytest.mark.parametrize(("victim", "how"), [("lb1", signal.SIGTERM), ("lb2", signal.SIGKILL)],
                         ids=["sigterm", "kill-9"])
def test_a_failed_balancer_is_withdrawn_live_connections_go_on_and_it_comes_back(
        demo, victim, how):
    result = asyncio.run(demo.failover(victim, how, per_balancer=2))
    # Withdrawn by the health check, not by the session timing out: it stays up.
    assert result.sessions == {"lb1": "Established", "lb2": "Established"}
    assert result.after["failed"] == 0 and result.after["ok"] > 0
    assert result.moved == 0        # every live connection kept its backend
    assert sum(result.new_connections.values()) == 10
    survivor = next(b for b in demo.balancers.values() if b.role != victim)
    assert survivor.daemon.get("/health")["status"] == "ok"
    back = asyncio.run(demo.come_back(victim, connections=24))
    # The live connections the router rehashed to it when it joined went on.
    assert back.requests.count()["failed"] == 0 and back.requests.count()["ok"] > 0
    assert back.requests.moved == 0
    for vip in demo.net.vips.values():
        assert len(demo.next_hops(vip)) == 2
