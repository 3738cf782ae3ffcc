"""Health probes and neighbour solicitations never leave from a VIP, in either family.

The deployment of the IPv6 report: the balancer has its own /64 address and the VIP as
a /128 in the same /64, and the backends hold the VIP on their loopback. Left to the
kernel, every probe and solicitation would leave from the VIP (longest match), the
backends would answer themselves, and every backend would look dead.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from pesigitg.testing.netns import inside, ip
from tests.netns.lbtoml import lb_toml
from tests.netns.peer import VersionNegotiationResponder
from tests.netns.test_daemon import make

LB6, VIP6, B1, B2 = "fd00:9::1", "fd00:9::100", "fd00:9::2", "fd00:9::3"
SERVERS6 = [{"sid": "010101", "address": B1}, {"sid": "020202", "address": B2}]


def enable_ipv6(lab, own: bool = True) -> None:
    """IPv6 in the lab: the balancer's own address (unless ``own`` is False) and the
    VIP on v0; two backend addresses on v1 and the VIP on the peer's loopback (DSR)."""
    with inside(lab.peer_ns), open("/proc/sys/net/ipv6/conf/v1/disable_ipv6", "w") as f:
        f.write("0")
    for address in ([f"{LB6}/64"] if own else []) + [f"{VIP6}/128"]:
        ip("-6", "addr", "add", address, "dev", "v0", "nodad", ns=lab.lb_ns)
    for address in (B1, B2):
        ip("-6", "addr", "add", f"{address}/64", "dev", "v1", "nodad", ns=lab.peer_ns)
    ip("-6", "addr", "add", f"{VIP6}/128", "dev", "lo", ns=lab.peer_ns)


@pytest.mark.parametrize("vips_listed", [True, False], ids=["vips-listed", "no-vip-filter"])
def test_ipv6_backends_are_probed_and_resolved_from_the_balancers_own_address(
        lab, daemons, vips_listed):
    enable_ipv6(lab)
    route = ip("-6", "route", "get", B1, ns=lab.lb_ns)
    assert f"src {VIP6}" in route           # what the kernel alone would choose
    responders = [VersionNegotiationResponder(lab.peer_ns, a) for a in (B1, B2)]
    try:
        daemon = make(lab, daemons, SERVERS6, health=True)
        if vips_listed:
            daemon.routes.write_text(f'vips = ["{VIP6}", "10.9.0.100"]\n'
                                     + daemon.routes.read_text())
        daemon.start()
        config = daemon.get("/config")
        # Probed before the daemon said it was started: up, from a real probe.
        assert [s["health"] for s in config["servers"]] == ["up (probed)", "up (probed)"]
        assert config["sources"] == {"ipv4": None,
                                     "ipv6": {"address": LB6, "chosen": "automatic"}}
        # Resolved over NDP by pesigitgd itself (no static MAC).
        assert {(s["mac_source"], s["mac"]) for s in config["servers"]} == \
            {("neighbour", lab.peer_mac.hex(":"))}
        assert sorted(config["fallback_pool"]) == [B1, B2]
        daemon.wait_until(lambda: all(r.answered >= 3 for r in responders), timeout=10,
                          what="three probes per backend")
        assert set().union(*(r.sources for r in responders)) == {LB6}
        assert daemon.get("/health")["status"] == "ok"
    finally:
        for r in responders:
            r.close()


def test_a_configured_source_address_is_used(lab, daemons):
    enable_ipv6(lab)
    ip("-6", "addr", "add", "fd00:9::5/64", "dev", "v0", "nodad", ns=lab.lb_ns)
    responder = VersionNegotiationResponder(lab.peer_ns, B1)
    try:
        daemon = make(lab, daemons, SERVERS6[:1], health=True,
                      extra_conf="source_address = fd00:9::5\n").start()
        assert daemon.get("/config")["sources"]["ipv6"] == {"address": "fd00:9::5",
                                                            "chosen": "configured"}
        daemon.wait_until(lambda: responder.answered >= 2, what="two probes")
        assert responder.sources == {"fd00:9::5"}
    finally:
        responder.close()


def test_a_backend_dead_at_start_never_gets_traffic(lab, daemons):
    enable_ipv6(lab)
    responder = VersionNegotiationResponder(lab.peer_ns, B1)      # B2 has no QUIC stack
    try:
        daemon = make(lab, daemons, SERVERS6, health=True).start()
        servers = daemon.get("/config")["servers"]
        assert [s["health"] for s in servers] == ["up (probed)", "down (probed)"]
        assert servers[1]["last_check"].startswith("no version negotiation within 150 ms")
        assert daemon.get("/config")["fallback_pool"] == [B1]
        assert daemon.get("/health")["status"] == "degraded"
    finally:
        responder.close()


def test_no_usable_source_refuses_to_start_and_says_what_to_add(lab, daemons):
    enable_ipv6(lab, own=False)             # v0 holds only the VIP in IPv6
    daemon = make(lab, daemons, SERVERS6[:1], health=True)
    daemon.routes.write_text(f'vips = ["{VIP6}"]\n' + daemon.routes.read_text())
    started = subprocess.run(daemon.command("-f"), capture_output=True, text=True,
                             timeout=30)
    assert started.returncode == 1
    assert (f"cannot start: no IPv6 address on v0 to probe and resolve the IPv6 backends "
            f"({B1}) from ({VIP6} is a VIP): add one in their prefix "
            f"(ip -6 addr add ADDRESS/64 dev v0) or set source_address") in started.stderr


def test_a_reload_adding_backends_it_cannot_probe_fails_and_changes_nothing(lab, daemons):
    enable_ipv6(lab, own=False)
    responder = VersionNegotiationResponder(lab.peer_ns, "10.9.0.2")
    try:
        daemon = make(lab, daemons, [{"sid": "030303", "address": "10.9.0.2"}],
                      health=True).start()
        before = daemon.get("/config")
        assert before["sources"]["ipv4"] == {"address": "10.9.0.1", "chosen": "automatic"}
        daemon.routes.write_text(lb_toml([{"sid": "030303", "address": "10.9.0.2"},
                                          *SERVERS6], health=True))
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_log("reload failed", after=mark)
        assert (f"no IPv6 address on v0 to probe and resolve the IPv6 backends ({B1}, {B2}) "
                f"from ({VIP6}/128 covers none of them and may be a VIP)") in line
        after = daemon.get("/config")
        assert after["servers"] == before["servers"] and after["sources"] == before["sources"]
    finally:
        responder.close()


def test_an_ipv6_backend_added_by_a_reload_is_probed_before_it_gets_traffic(lab, daemons):
    enable_ipv6(lab)
    responders = [VersionNegotiationResponder(lab.peer_ns, a) for a in ("10.9.0.2", B1)]
    try:
        daemon = make(lab, daemons, [{"sid": "030303", "address": "10.9.0.2"}],
                      health=True).start()
        daemon.routes.write_text(lb_toml([{"sid": "030303", "address": "10.9.0.2"},
                                          SERVERS6[0]], health=True))
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded: ", after=mark)
        rebuilt = [line for line in daemon.lines[mark:] if "route table rebuilt" in line]
        # One table for the reload, already with the new backend probed and in it.
        assert rebuilt and rebuilt[0].endswith(f"fallback pool 10.9.0.2, {B1}")
        probed = daemon.wait_log(f"backend {B1} is up \\(first probe\\)", after=mark)
        assert daemon.lines.index(probed) < daemon.lines.index(rebuilt[0])
        config = daemon.get("/config")
        assert config["sources"] == {
            "ipv4": {"address": "10.9.0.1", "chosen": "automatic"},
            "ipv6": {"address": LB6, "chosen": "automatic"}}
        assert [s["health"] for s in config["servers"]] == ["up (probed)"] * 2
    finally:
        for r in responders:
            r.close()
