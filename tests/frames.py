"""Frames built byte by byte for the data-path tests (no packet library).

Checksums are left zero where the code under test does not look at them (XDP and
the worker never verify them); IPv4 header checksums are computed so frames are
also valid on a real wire.
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x0806, 0x86DD, 0x8100
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS = 0, 43, 44, 60

CLIENT_MAC = bytes.fromhex("02000000c001")
LB_MAC = bytes.fromhex("02000000b001")


def ether(payload: bytes, ethertype: int, src: bytes = CLIENT_MAC, dst: bytes = LB_MAC) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(payload: bytes, proto: int, src: str = "192.0.2.10", dst: str = "198.51.100.1",
         options: bytes = b"", frag: int = 0, ttl: int = 64) -> bytes:
    """IPv4 header (RFC 791); ``options`` padded to 4 octets; ``frag`` = flags|offset."""
    options = options.ljust((len(options) + 3) // 4 * 4, b"\0")
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0x1234,
                         frag, ttl, proto, 0, ipaddress.IPv4Address(src).packed,
                         ipaddress.IPv4Address(dst).packed) + options
    csum = checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv6(payload: bytes, nexthdr: int, src: str = "2001:db8::10", dst: str = "2001:db8:1::1",
         hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nexthdr, hop_limit,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def ext_header(units: int = 0) -> bytes:
    """Hop-by-hop / routing / destination options header of (units + 1) * 8 octets.

    The next-header octet is filled in by :func:`udp6_frame`."""
    return bytes([0, units]) + bytes(6 + 8 * units)


def frag_header(offset: int = 0, more: bool = False) -> bytes:
    """IPv6 fragment header (RFC 8200 §4.5); ``offset`` in 8-octet units."""
    return struct.pack("!BBHI", 0, 0, (offset << 3) | int(more), 0xABCD)


def udp(payload: bytes, sport: int = 50000, dport: int = 443) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int = 50000, dport: int = 443) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def icmp4(icmp_type: int, code: int, quoted: bytes) -> bytes:
    return struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted


def icmp6(icmp_type: int, code: int, quoted: bytes) -> bytes:
    return struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted


def arp_request(sender: str = "192.0.2.10", target: str = "198.51.100.1") -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, CLIENT_MAC,
                       ipaddress.IPv4Address(sender).packed, bytes(6),
                       ipaddress.IPv4Address(target).packed)
    return ether(body, ETH_P_ARP, dst=b"\xff" * 6)


def quic_short(dcid: bytes, payload: bytes = b"\x00" * 24) -> bytes:
    """A 1-RTT packet (RFC 9000 §17.3): fixed bit set, then the DCID."""
    return bytes([0x40 | 0x01]) + dcid + payload


def quic_long(dcid: bytes, scid: bytes = b"\x11" * 8, version: int = 1,
              payload: bytes = b"\x00" * 32) -> bytes:
    """An Initial-like long header (RFC 8999 §5.1 invariants)."""
    return (bytes([0xC0]) + struct.pack("!I", version) + bytes([len(dcid)]) + dcid
            + bytes([len(scid)]) + scid + payload)


def udp4_frame(payload: bytes = b"\x40" + bytes(30), dport: int = 443, sport: int = 50000,
               dst: str = "198.51.100.1", src: str = "192.0.2.10",
               options: bytes = b"") -> bytes:
    return ether(ipv4(udp(payload, sport, dport), PROTO_UDP, src=src, dst=dst,
                      options=options), ETH_P_IP)


def udp6_frame(payload: bytes = b"\x40" + bytes(30), dport: int = 443, sport: int = 50000,
               dst: str = "2001:db8:1::1", src: str = "2001:db8::10",
               ext: list[tuple[int, bytes]] | None = None) -> bytes:
    """IPv6/UDP; ``ext`` is a list of (header type, header octets without nexthdr fixup)."""
    chain = b""
    first = PROTO_UDP
    for kind, raw in reversed(ext or []):
        chain = bytes([first]) + raw[1:] + chain
        first = kind
    return ether(ipv6(chain + udp(payload, sport, dport), first, src=src, dst=dst), ETH_P_IPV6)


def udp6_checksum(src: str, dst: str, datagram: bytes) -> int:
    """RFC 8200 §8.1: over the pseudo-header and the whole UDP datagram (mandatory)."""
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!I3xB", len(datagram), PROTO_UDP))
    return checksum(pseudo + datagram) or 0xFFFF


def udp6_datagram(payload: bytes, src: str, dst: str, sport: int = 50000,
                  dport: int = 443) -> bytes:
    """A UDP datagram with its IPv6 checksum filled in (a kernel receiving it checks)."""
    raw = udp(payload, sport, dport)
    return raw[:6] + struct.pack("!H", udp6_checksum(src, dst, raw)) + raw[8:]


def fragments4(datagram: bytes, src: str, dst: str, size: int = 1480) -> list[bytes]:
    """``datagram`` (UDP) cut into IPv4 fragments of ``size`` octets (a multiple of 8)."""
    pieces = [datagram[i:i + size] for i in range(0, len(datagram), size)]
    return [ether(ipv4(piece, PROTO_UDP, src=src, dst=dst,
                       frag=(0x2000 if k < len(pieces) - 1 else 0) | (k * size // 8)),
                  ETH_P_IP) for k, piece in enumerate(pieces)]


def fragments6(datagram: bytes, src: str, dst: str, size: int = 1448) -> list[bytes]:
    """``datagram`` (UDP) cut into IPv6 fragments (RFC 8200 §4.5) of ``size`` octets."""
    pieces = [datagram[i:i + size] for i in range(0, len(datagram), size)]
    return [ether(ipv6(bytes([PROTO_UDP]) + frag_header(k * size // 8,
                                                        k < len(pieces) - 1)[1:] + piece,
                       FRAGMENT, src=src, dst=dst), ETH_P_IPV6)
            for k, piece in enumerate(pieces)]
