"""A flood of tokenless Initials through the real daemon in Retry mode "always": no
Initial reaches a backend, every one is answered by a well-formed Retry whose
integrity tag verifies (checked with ``cryptography``, nothing of the code under
test), and tokens that fail are dropped and counted by kind."""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pesigitg.testing.netns import ip
from pesigitg.testing.traffic import PacedStream
from tests import frames as f
from tests.netns.peer import PeerSocket
from tests.netns.test_daemon import MAC1, MAC2, make

KEY = bytes.fromhex("5e1f00d2a7c34b6d8e9fa0b1c2d3e4f5")
IV = bytes.fromhex("0b1c2d3e4f5061728394a5b6")
RETRY_TOML = (f'\n[retry]\nmode = "always"\ntoken_lifetime_s = 30\n'
              f'[[retry.keys]]\nsequence = 7\nkey = "{KEY.hex()}"\niv = "{IV.hex()}"\n')
INTEGRITY_V1 = (bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"),
                bytes.fromhex("461599d35d632bf2239825bb"))
CLIENT4, CLIENT6, VIP4, VIP6 = "192.0.2.10", "2001:db8::10", "10.9.0.1", "fd00:9::1"


def initial(odcid: bytes, scid: bytes, v6: bool, token: bytes = b"", sport: int = 50000,
            src: str | None = None) -> bytes:
    head = (b"\xc3" + struct.pack("!I", 1) + bytes([len(odcid)]) + odcid
            + bytes([len(scid)]) + scid)
    head += (bytes([len(token)]) if len(token) < 64 else struct.pack("!H", 0x4000 | len(token)))
    payload = head + token + bytes(1200 - len(head) - len(token))
    if v6:
        return f.udp6_frame(payload, sport=sport, src=src or CLIENT6, dst=VIP6)
    return f.udp4_frame(payload, sport=sport, src=src or CLIENT4, dst=VIP4)


def retry_of(frame: bytes, v6: bool) -> tuple[bytes, bytes]:
    """(the Retry's DCID, the whole QUIC packet), checking the IP and UDP headers."""
    l3 = frame[14:]
    if v6:
        udp = l3[40:]
        assert l3[6] == 17 and struct.unpack_from("!H", l3, 4)[0] == len(udp)
        pseudo = l3[8:40] + struct.pack("!I3xB", len(udp), 17)
    else:
        assert f.checksum(l3[:20]) == 0
        udp = l3[20:struct.unpack_from("!H", l3, 2)[0]]
        pseudo = l3[12:20] + struct.pack("!xBH", 17, len(udp))
    assert f.checksum(pseudo + udp) == 0, "UDP checksum"
    quic = udp[8:]
    assert quic[0] & 0xF0 == 0xF0 and quic[1:5] == b"\0\0\0\1", "a v1 Retry"
    return quic[6:6 + quic[5]], quic


def integrity_holds(quic: bytes, odcid: bytes) -> bool:
    key, nonce = INTEGRITY_V1
    try:
        AESGCM(key).decrypt(nonce, quic[-16:], bytes([len(odcid)]) + odcid + quic[:-16])
    except InvalidTag:
        return False
    return True


@pytest.mark.parametrize(("family", "count"), [(4, 100_000), (6, 10_000)],
                         ids=["ipv4-100k", "ipv6-10k"])
def test_a_flood_of_tokenless_initials_gets_only_retries(lab, daemons, family, count):
    ip("-6", "addr", "add", f"{VIP6}/64", "dev", "v0", "nodad", ns=lab.lb_ns)
    daemon = make(lab, daemons)
    daemon.routes.write_text(daemon.routes.read_text() + RETRY_TOML)
    daemon.start()
    v6 = family == 6
    # 2000 distinct clients (each its own CIDs), sent in turn at a rate the copy-mode
    # path sustains; each Retry's DCID (the client's source CID) says which it answers.
    clients = {os.urandom(8): os.urandom(8) for _ in range(2000)}      # scid -> odcid
    frames = [initial(odcid, scid, v6, sport=40000 + k % 20000)
              for k, (scid, odcid) in enumerate(clients.items())]
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    got: list[bytes] = []
    capture = threading.Thread(target=lambda: got.extend(
        peer.capture({f.CLIENT_MAC, MAC1, MAC2}, count, timeout=count / 10_000 + 20)))
    capture.start()
    try:
        stream = PacedStream(lab.peer_ns, "v1", [lab.lb_mac + fr[6:] for fr in frames],
                             rate=20_000, limit=count).start()
        assert stream.wait(count / 20_000 + 30) == count
        capture.join()
    finally:
        peer.close()
    total = daemon.get("/stats")["total"]
    assert not [g for g in got if g[:6] in (MAC1, MAC2)], "an Initial reached a backend"
    assert len(got) == count == total["retry_sent"] == total["initials"]
    assert total["forwarded"] == 0
    for frame in got:
        dcid, quic = retry_of(frame, v6)
        assert integrity_holds(quic, clients[dcid])


def test_tokens_that_fail_are_dropped_and_counted(lab, daemons):
    from pesigitg.routing.retry import RetryKey, seal_token

    daemon = make(lab, daemons)
    daemon.routes.write_text(daemon.routes.read_text() + RETRY_TOML)
    daemon.start()
    key = RetryKey(7, KEY, IV)
    rscid, odcid, now = b"\xe5" * 8, os.urandom(8), int(time.time())

    def token(**kw: Any) -> bytes:
        args: dict[str, Any] = {"client": CLIENT4, "port": 50000, "odcid": odcid,
                                "rscid": rscid, "expiry": now + 30} | kw
        return seal_token(key, **args)

    cases = {
        "forged": bytes([0x07]) + os.urandom(50),
        "expired": token(expiry=now - 10),
        "wrong address": token(client="192.0.2.99"),
        "wrong port": token(port=50001),
    }
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        for bad in cases.values():
            peer.send([initial(rscid, b"\x51" * 8, False, token=bad)] * 50)
        daemon.wait_until(lambda: daemon.get("/stats")["total"]["initials"] == 200,
                          what="200 Initials seen")
        assert peer.capture({MAC1, MAC2, f.CLIENT_MAC}, 1, timeout=1) == []
        # The one good token is forwarded, to a backend.
        peer.send([initial(rscid, b"\x51" * 8, False, token=token())])
        forwarded = peer.capture({MAC1, MAC2, f.CLIENT_MAC}, 1)
        assert len(forwarded) == 1 and forwarded[0][:6] in (MAC1, MAC2)
    finally:
        peer.close()
    total = daemon.get("/stats")["total"]
    assert (total["retry_token_invalid"], total["retry_token_expired"],
            total["retry_token_valid"]) == (150, 50, 1)
    assert total["dropped_token"] == 200 and total["retry_sent"] == 0
    metrics = daemon.get("/metrics")
    assert 'pesigitg_retry_active{worker="0"} 1' in metrics
    assert "# TYPE pesigitg_retry_active gauge" in metrics


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_junk_tokens_to_a_routable_cid_never_reach_a_backend(lab, daemons, family):
    """One CID learnt from a real handshake must not open a backend to 1200-octet junk
    Initials: their tokens are opened, and only the 4-tuple a valid token came from is
    let through to the server's CID."""
    from pesigitg.routing.retry import RetryKey, seal_token
    from tests.netns.test_daemon import CONFIG

    ip("-6", "addr", "add", f"{VIP6}/64", "dev", "v0", "nodad", ns=lab.lb_ns)
    daemon = make(lab, daemons)
    daemon.routes.write_text(daemon.routes.read_text() + RETRY_TOML)
    daemon.start()
    v6 = family == 6
    client = CLIENT6 if v6 else CLIENT4
    server_cid = CONFIG.encode(b"\x01\x01\x01", os.urandom(4))     # backend 1's CID
    rscid, now = b"\xe5" * 8, int(time.time())
    good = seal_token(RetryKey(7, KEY, IV), client, 50000, os.urandom(8), rscid, now + 30)
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        junk = [initial(server_cid, b"\x51" * 8, v6, token=bytes([0x07]) + os.urandom(60),
                        sport=41000 + k) for k in range(100)]
        junk.append(initial(server_cid, b"\x51" * 8, v6, token=good))   # not yet admitted
        peer.send(junk)
        daemon.wait_until(lambda: daemon.get("/stats")["total"]["initials"] == 101,
                          what="101 Initials seen")
        assert peer.capture({MAC1, MAC2, f.CLIENT_MAC}, 1, timeout=1) == []
        # The client shows its valid token (to the Retry's CID): its 4-tuple is admitted,
        # and its next Initial, to the server's CID, goes to that server.
        peer.send([initial(rscid, b"\x51" * 8, v6, token=good)])
        peer.send([initial(server_cid, b"\x51" * 8, v6, token=good)])
        forwarded = peer.capture({MAC1, MAC2, f.CLIENT_MAC}, 2)
        assert len(forwarded) == 2 and forwarded[1][:6] == MAC1
    finally:
        peer.close()
    total = daemon.get("/stats")["total"]
    assert (total["retry_token_invalid"], total["retry_token_valid"],
            total["retry_tuple_admitted"], total["dropped_token"]) == (101, 1, 1, 101)


def test_each_keys_sealed_tokens_are_counted_and_health_warns_near_the_limit(lab, daemons):
    import json

    from pesigitg.daemon.state import key_fingerprint
    from pesigitg.daemon.tokens_sealed import LIMIT

    daemon = make(lab, daemons)
    daemon.routes.write_text(daemon.routes.read_text() + RETRY_TOML)
    state = daemon.pidfile.with_name("pesigitgd.state")
    near = int(LIMIT * 0.75) - 10                   # ten Retries short of the warning
    state.write_text(json.dumps({"tokens_sealed": {key_fingerprint(KEY): near}}))
    daemon.start()
    health = daemon.get("/health")
    assert health["status"] == "ok"
    assert health["retry_keys"] == [{"sequence": 7, "tokens_sealed": near, "limit": LIMIT,
                                     "share_of_limit": round(near / LIMIT, 6)}]
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        peer.send([initial(os.urandom(8), os.urandom(8), False, sport=42000 + k)
                   for k in range(20)])
        assert len(peer.capture({f.CLIENT_MAC}, 20)) == 20
    finally:
        peer.close()
    daemon.wait_until(lambda: daemon.get("/health")["status"] == "degraded",
                      what="the warning")
    health = daemon.get("/health")
    assert health["retry_keys"][0]["tokens_sealed"] == near + 20
    assert health["reasons"] == [f"Retry key sequence 7 has sealed {near + 20} tokens, 75% of "
                                 f"the {LIMIT} a key may seal: add a key with a higher "
                                 "sequence, reload, and retire this one"]
    daemon.wait_log("Retry key sequence 7 has sealed")
    assert daemon.stop() == 0
    assert json.loads(state.read_text())["tokens_sealed"] == {key_fingerprint(KEY): near + 20}
