"""The packet path's edges through the real daemon (XDP program and worker, veth in
namespaces): fragments, ICMP errors about CID-routed flows, Packets Too Big for every
backend and their rate limit, and the fallback flow table across a pool change."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from pesigitg.testing.netns import inside, ip
from tests import frames as f
from tests.netns.lbtoml import lb_toml
from tests.netns.peer import PeerSocket
from tests.netns.test_daemon import CONFIG, MAC1, MAC2, MAC3, STATIC, make

LB4, LB6, OTHER4 = "10.9.0.1", "fd00:9::1", "10.9.0.50"
PEER4, PEER6 = "10.9.0.2", "fd00:9::2"
THREE = [*STATIC, {"sid": "030303", "address": "10.9.0.13", "mac": MAC3.hex(":")}]
MACS = {MAC1, MAC2, MAC3}


@pytest.fixture
def peer(lab) -> Iterator[PeerSocket]:
    ip("-6", "addr", "add", f"{LB6}/64", "dev", "v0", "nodad", ns=lab.lb_ns)
    ip("addr", "add", f"{OTHER4}/24", "dev", "v0", ns=lab.lb_ns)
    sock = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        yield sock
    finally:
        sock.close()


def listening(lab, family: int) -> socket.socket:
    """A UDP socket of the balancer's own kernel on the steered port."""
    with inside(lab.lb_ns):
        sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                             socket.SOCK_DGRAM)
    sock.bind(("::" if family == 6 else "0.0.0.0", 443))
    sock.settimeout(2)
    return sock


def fragmented(family: int, dst: str, payload: bytes) -> list[bytes]:
    if family == 4:
        return f.fragments4(f.udp(payload, sport=40000), PEER4, dst)
    return f.fragments6(f.udp6_datagram(payload, PEER6, dst, sport=40000), PEER6, dst)


def xdp(daemon) -> dict[str, int]:
    return daemon.get("/stats")["xdp"]


def with_vips(lab, daemons, servers, vips=(LB4, LB6)):
    """A daemon whose lb.toml lists ``vips``: Packets Too Big quoting them fan out."""
    daemon = make(lab, daemons, servers)
    listed = ", ".join(f'"{v}"' for v in vips)
    daemon.routes.write_text(f"vips = [{listed}]\n" + daemon.routes.read_text())
    return daemon


# -- fragments ------------------------------------------------------------------------------

@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_fragments_all_go_to_the_kernel_with_the_vip_filter_off(lab, daemons, peer, family):
    """With no VIP filter nothing can tell a later fragment belongs to us: every fragment
    of a datagram goes to the kernel, none to a worker, and the kernel reassembles it."""
    daemon = make(lab, daemons).start()
    sock = listening(lab, family)
    try:
        payload = f.quic_long(bytes(8)) + os.urandom(3200)       # three fragments
        pieces = fragmented(family, LB4 if family == 4 else LB6, payload)
        assert len(pieces) == 3
        before = xdp(daemon)
        peer.send(pieces)
        assert sock.recv(4096) == payload
        after = xdp(daemon)
        assert after["pass_fragment"] - before["pass_fragment"] == 3
        assert after["redirect_udp"] == before["redirect_udp"]
        assert daemon.get("/stats")["total"]["rx"] == 0
    finally:
        sock.close()


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_fragments_to_a_vip_are_all_dropped_and_counted_with_the_filter_on(
        lab, daemons, peer, family):
    """QUIC never fragments (RFC 9000 §14): fragments addressed to a VIP are dropped, all
    of them, at XDP; other destinations' fragments still reach the kernel whole."""
    daemon = make(lab, daemons)
    daemon.routes.write_text(f'vips = ["{LB4}", "{LB6}"]\n' + daemon.routes.read_text())
    daemon.start()
    sock = listening(lab, family)
    try:
        payload = f.quic_long(bytes(8)) + os.urandom(3200)
        before = xdp(daemon)
        peer.send(fragmented(family, LB4 if family == 4 else LB6, payload))
        daemon.wait_until(lambda: xdp(daemon)["drop_fragment"] - before["drop_fragment"] == 3,
                          what="three fragments dropped")
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        if family == 4:
            peer.send(fragmented(4, OTHER4, payload))              # not a VIP
            assert sock.recv(4096) == payload
        after = xdp(daemon)
        assert after["redirect_udp"] == before["redirect_udp"]
        assert daemon.get("/stats")["total"]["rx"] == 0
    finally:
        sock.close()


def test_an_atomic_fragment_is_a_whole_datagram_and_is_forwarded(lab, daemons, peer):
    """RFC 6946: an IPv6 fragment header with offset 0 and M clear holds a whole
    datagram; it is routed like any other."""
    daemon = make(lab, daemons).start()
    frame = f.udp6_frame(f.quic_short(CONFIG.encode(b"\x02\x02\x02", os.urandom(4))),
                         ext=[(f.FRAGMENT, f.frag_header(0))])
    peer.send([frame])
    got = peer.capture(MACS, 1)
    assert [g[:6] for g in got] == [MAC2] and got[0][12:] == frame[12:]
    assert daemon.get("/stats")["total"]["cid_routed_1"] == 1


# -- ICMP errors ------------------------------------------------------------------------------

def icmp_about(quic: bytes, family: int, too_big: bool, sport: int = 51234,
               source: str | None = None) -> bytes:
    """An ICMP error from a router on the way to the client, about a datagram a backend
    sent from the VIP (Direct Server Return), or from ``source``."""
    if family == 4:
        quoted = f.ipv4(f.udp(quic, sport=443, dport=sport), f.PROTO_UDP, src=source or LB4,
                        dst="192.0.2.77")
        return f.ether(f.ipv4(f.icmp4(3, 4 if too_big else 3, quoted), f.PROTO_ICMP,
                              src="203.0.113.9", dst=LB4), f.ETH_P_IP)
    quoted = f.ipv6(f.udp(quic, sport=443, dport=sport), f.PROTO_UDP, src=source or LB6,
                    dst="2001:db8::77")
    return f.ether(f.ipv6(f.icmp6(2 if too_big else 1, 0 if too_big else 4, quoted),
                          f.PROTO_ICMPV6, src="2001:db8:ff::9", dst=LB6), f.ETH_P_IPV6)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("too_big", [True, False], ids=["too-big", "unreachable"])
def test_an_icmp_error_about_a_long_header_reaches_the_server_of_its_source_cid(
        lab, daemons, peer, family, too_big):
    daemon = make(lab, daemons, THREE).start()
    # The backend behind 020202 sent a Handshake packet with its own CID as source.
    backend_cid = CONFIG.encode(b"\x02\x02\x02", os.urandom(4))
    frame = icmp_about(f.quic_long(dcid=os.urandom(8), scid=backend_cid), family, too_big)
    peer.send([frame])
    got = peer.capture(MACS, 3, timeout=1)
    assert [g[:6] for g in got] == [MAC2] and got[0][12:] == frame[12:]
    total = daemon.get("/stats")["total"]
    assert (total["icmp_cid_routed"], total["icmp_routed"], total["icmp_fanout"]) == (1, 1, 0)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_a_packet_too_big_about_a_short_header_reaches_every_backend(lab, daemons, peer,
                                                                      family):
    """Only the client's CID is in a short header: the backend that sent it is unknown,
    so each backend gets a copy (and lowers its path MTU if the flow is its own)."""
    daemon = with_vips(lab, daemons, THREE).start()
    frame = icmp_about(f.quic_short(os.urandom(8)), family, too_big=True)
    peer.send([frame])
    got = peer.capture(MACS, 4, timeout=1)
    assert sorted(g[:6] for g in got) == sorted(MACS)
    assert all(g[12:] == frame[12:] for g in got)
    total = daemon.get("/stats")["total"]
    assert (total["icmp_fanout"], total["icmp_fanout_limited"], total["forwarded"]) == (1, 0, 3)
    # Any other error about a short header goes by the flow's hash, to one backend.
    peer.send([icmp_about(f.quic_short(os.urandom(8)), family, too_big=False)])
    assert len(peer.capture(MACS, 2, timeout=1)) == 1
    assert daemon.get("/stats")["total"]["icmp_hash_routed"] == 1


def test_the_fan_out_rate_limit_holds_and_the_rest_go_by_hash(lab, daemons, peer):
    daemon = with_vips(lab, daemons, THREE)
    daemon.routes.write_text(daemon.routes.read_text() + "\n[pmtu]\nfanout_per_second = 5\n")
    daemon.start()
    sent = 40
    started = time.monotonic()
    peer.send([icmp_about(f.quic_short(os.urandom(8)), 4, too_big=True, sport=50000 + k)
               for k in range(sent)])
    daemon.wait_until(lambda: daemon.get("/stats")["total"]["icmp_routed"] == sent,
                      what="every Packet Too Big forwarded")
    took = time.monotonic() - started
    total = daemon.get("/stats")["total"]
    fanned, limited = total["icmp_fanout"], total["icmp_fanout_limited"]
    # A burst of 5 (one second's worth), then 5 a second at most.
    assert 5 <= fanned <= 5 + int(5 * took) + 1, (fanned, took)
    assert fanned + limited == sent
    assert total["forwarded"] == 3 * fanned + limited
    assert len(peer.capture(MACS, 3 * fanned + limited + 1, timeout=1)) == \
        3 * fanned + limited


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("vips", [(LB4, LB6), ()], ids=["other-vips", "no-vips"])
def test_a_packet_too_big_quoting_no_vip_goes_to_one_backend_and_is_counted(
        lab, daemons, peer, family, vips):
    """Anyone may send a Packet Too Big quoting any packet: unless that packet left from
    a VIP it is nobody's to copy, and must not lower every backend's path MTU."""
    daemon = with_vips(lab, daemons, THREE, vips).start()
    frame = icmp_about(f.quic_short(os.urandom(8)), family, too_big=True,
                       source=OTHER4 if family == 4 else "fd00:9::50")
    peer.send([frame])
    got = peer.capture(MACS, 3, timeout=1)
    total = daemon.get("/stats")["total"]
    if vips:
        # The XDP program's VIP filter leaves it to the kernel: not ours at all.
        assert got == [] and total["rx"] == 0
        assert xdp(daemon)["pass_icmp"] == 1
        return
    # No VIP filter: the worker sees it, and sends it to one backend only.
    assert len(got) == 1 and got[0][12:] == frame[12:]
    assert (total["icmp_fanout"], total["icmp_fanout_refused"], total["icmp_hash_routed"],
            total["forwarded"]) == (0, 1, 1, 1)


def checksums_hold(frame: bytes) -> bool:
    """The IP header's and the ICMP message's checksums of an ICMP frame are right, and
    the IP length says the frame's length."""
    ip = frame[14:]
    if ip[0] >> 4 == 4:
        hlen = (ip[0] & 0xF) * 4
        return (struct.unpack_from("!H", ip, 2)[0] == len(ip) and f.checksum(ip[:hlen]) == 0
                and f.checksum(ip[hlen:]) == 0)
    icmp = ip[40:]
    pseudo = ip[8:40] + struct.pack("!I3xB", len(icmp), f.PROTO_ICMPV6)
    return struct.unpack_from("!H", ip, 4)[0] == len(icmp) and f.checksum(pseudo + icmp) == 0


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_copies_of_a_large_packet_too_big_are_cut_to_1280_octets_and_stay_valid(
        lab, daemons, peer, family):
    daemon = with_vips(lab, daemons, THREE).start()
    big = icmp_about(f.quic_short(os.urandom(8), bytes(1300)), family, too_big=True)
    assert len(big) - 14 > 1280
    peer.send([big])
    got = peer.capture(MACS, 4, timeout=1)
    whole = [g for g in got if len(g) == len(big)]
    copies = [g for g in got if len(g) == 14 + 1280]
    assert len(got) == 3 and len(whole) == 1 and len(copies) == 2
    assert whole[0][12:] == big[12:]                # the first backend's: untouched
    header = 14 + (20 if family == 4 else 40) + 8   # up to the quoted packet
    for copy in copies:
        assert checksums_hold(copy), copy.hex()
        assert copy[header:] == big[header:14 + 1280]
    assert daemon.get("/stats")["total"]["icmp_fanout"] == 1


# -- the fallback flow table ------------------------------------------------------------------

def unroutable_flows(count: int, first_port: int = 20000) -> list[bytes]:
    """1-RTT packets whose CID names config 7 (no config): routed by the 4-tuple."""
    return [f.udp4_frame(f.quic_short(b"\xe0" + os.urandom(7)), sport=first_port + k,
                         src="192.0.2.10", dst=LB4) for k in range(count)]


def where(peer: PeerSocket, frames: list[bytes]) -> dict[int, bytes]:
    """Source port -> the backend MAC each frame went to."""
    out = {}
    for frame in frames:
        peer.send([frame])
        got = peer.capture(MACS, 1)
        assert len(got) == 1
        out[int.from_bytes(got[0][34:36], "big")] = got[0][:6]
    return out


@pytest.mark.parametrize("flow_table", [True, False], ids=["flow-table", "no-flow-table"])
def test_a_fallback_flow_keeps_its_backend_when_another_backend_joins(
        lab, daemons, peer, flow_table):
    daemon = make(lab, daemons, STATIC)
    if not flow_table:
        daemon.routes.write_text(daemon.routes.read_text().replace(
            "table_size = 5003", "table_size = 5003\nflow_table_size = 0"))
    daemon.start()
    flows = unroutable_flows(120)
    first = where(peer, flows)
    assert set(first.values()) == {MAC1, MAC2}
    # A third backend joins, listed first (every backend's index in the table shifts).
    daemon.routes.write_text(lb_toml([THREE[2], *STATIC]).replace(
        "table_size = 5003", "table_size = 5003" + ("" if flow_table else
                                                    "\nflow_table_size = 0")))
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded: ", after=mark)
    second = where(peer, flows)
    moved = [port for port in first if first[port] != second[port]]
    total = daemon.get("/stats")["total"]
    if flow_table:
        assert moved == []
        assert total["flow_hits"] == 120 and total["flow_inserts"] == 120
    else:
        # Maglev moves about a third of the flows to the new backend.
        assert 10 < len(moved) < 80 and {second[p] for p in moved} == {MAC3}
        assert total["flow_hits"] == total["flow_inserts"] == 0
    assert where(peer, unroutable_flows(1, first_port=30000))   # new flows still go
