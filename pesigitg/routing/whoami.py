"""What the packet path makes of a connection ID (``pesigitg-ctl whoami``).

The verdict comes from the fast path's own decision (``decide_frame``) over a 1-RTT
packet carrying the CID, on the same compiled table the workers use, so it cannot
disagree with them; the reference codec only adds the decoded server ID for CIDs the
table does not route. Nothing here returns key material.
"""

from __future__ import annotations

import struct
from typing import Any

from pesigitg._fastpath import SHORT_HEADER_MIN, UNROUTABLE_REASONS, decide_frame
from pesigitg.routing.routes import CompiledRoutes

__all__ = ["explain_cid"]

def _probe_frame(cid: bytes) -> bytes:
    """A 1-RTT packet (RFC 9000 §17.3) with ``cid`` as its DCID, in IPv4/UDP/Ethernet."""
    quic = bytes([0x40]) + cid
    quic += bytes(max(SHORT_HEADER_MIN - len(quic), 0) + 16)
    udp = struct.pack("!HHHH", 50000, 443, 8 + len(quic), 0) + quic
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1]))
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + udp


def explain_cid(compiled: CompiledRoutes, cid: bytes,
                health: dict[str, str] | None = None) -> dict[str, Any]:
    """The verdict on ``cid`` under ``compiled``; ``health`` names each backend's state
    as the daemon reports it (absent: from the table)."""
    if not 1 <= len(cid) <= 20:
        raise ValueError(f"a connection ID is 1 to 20 octets, not {len(cid)}")
    route, chosen, _, unroutable, drop, _ = decide_frame(compiled.table, _probe_frame(cid))
    config_id = cid[0] >> 5
    config = next((c for c in compiled.configs if c.config_id == config_id), None)
    out: dict[str, Any] = {"cid": cid.hex(), "config_id": config_id, "config": None,
                           "server_id": None, "backend": None}
    backend = chosen if route == "cid" else None
    if config is not None:
        out["config"] = {"mode": config.mode, "server_id_length": config.server_id_len,
                         "nonce_length": config.nonce_len,
                         "first_octet_encodes_cid_length": config.encode_length}
        if len(cid) >= config.cid_len:
            server_id, _ = config.decode(cid[:min(len(cid), 20)])
            out["server_id"] = server_id.hex()
            if route != "cid":
                # A server the config lists, but which cannot take it now.
                backend = compiled.servers.get((config_id, server_id))
    if backend is not None:
        b = compiled.backends[backend]
        state = (health or {}).get(b.name) or ("up" if b.up else "down")
        if b.mac is None:
            state += ", MAC unknown"
        out["backend"] = {"address": b.name, "health": state, "draining": b.draining,
                          "mac": b.mac.hex(":") if b.mac else None}
    verdict = "cid" if route == "cid" else unroutable
    out["verdict"] = verdict
    out["route"] = {"cid": "cid", "fallback": "fallback"}.get(route, "dropped")
    if route == "cid":
        text = f"routed by its CID to {out['backend']['address']}"
    else:
        text = f"not routable ({dict(UNROUTABLE_REASONS).get(unroutable, unroutable)}): " \
               f"config {config_id}"
        if out["server_id"]:
            text += f", server {out['server_id']}"
        if out["backend"]:
            text += f" on {out['backend']['address']}, which is {out['backend']['health']}"
    if route == "fallback":
        text += "; its packets go to a backend by the fallback's hash"
    elif route != "cid":
        text += f"; its packets are dropped ({drop})"
    out["explanation"] = text
    return out
