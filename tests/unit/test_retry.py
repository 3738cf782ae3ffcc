"""The Retry offload's parts: AES-128-GCM (NIST vectors, and against ``cryptography``),
the Retry packet (RFC 9001 A.4, RFC 9369 A.4), and the worker's handling of Initials,
checked with the Python reference (pesigitg.routing.retry) and ``cryptography``."""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from pesigitg._fastpath import (
    RETRY_ADMITTED,
    FlowTable,
    gcm_open,
    gcm_seal,
    retry_packet,
    retry_screen,
)
from pesigitg.errors import ConfigError
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.retry import (
    QUIC_V1,
    QUIC_V2,
    RetryKey,
    RetryKeys,
    RetrySpec,
    TokenState,
    open_token,
    seal_new_token,
    seal_token,
    verify_integrity,
)
from pesigitg.routing.retry import (
    retry_packet as reference_retry,
)
from pesigitg.routing.route_config import TableOptions, load_route_config
from pesigitg.routing.routes import Backend, Server, compile_routes
from tests import frames as f

# -- AES-128-GCM ------------------------------------------------------------------------------

# NIST GCM test vectors (McGrew and Viega, "The Galois/Counter Mode of Operation",
# test cases 1-4; the same as the CAVP gcmEncryptExtIV128 set's first entries).
NIST = [
    ("00000000000000000000000000000000", "000000000000000000000000", "", "", "",
     "58e2fccefa7e3061367f1d57a4e7455a"),
    ("00000000000000000000000000000000", "000000000000000000000000", "",
     "00000000000000000000000000000000", "0388dace60b6a392f328c2b971b2fe78",
     "ab6e47d42cec13bdf53a67b21257bddf"),
    ("feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888", "",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
     "4d5c2af327cd64a62cf35abd2ba6fab4"),
    ("feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"),
]


@pytest.mark.parametrize(("key", "iv", "aad", "pt", "ct", "tag"), NIST)
def test_gcm_matches_the_nist_vectors(key, iv, aad, pt, ct, tag):
    k, n, a = bytes.fromhex(key), bytes.fromhex(iv), bytes.fromhex(aad)
    sealed = gcm_seal(k, n, a, bytes.fromhex(pt))
    assert sealed.hex() == ct + tag
    assert gcm_open(k, n, a, sealed) == bytes.fromhex(pt)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=12, max_size=12),
       st.binary(max_size=80), st.binary(max_size=200))
def test_gcm_agrees_with_cryptography(key, iv, aad, plaintext):
    sealed = gcm_seal(key, iv, aad, plaintext)
    assert sealed == AESGCM(key).encrypt(iv, plaintext, aad)
    assert gcm_open(key, iv, aad, sealed) == plaintext
    for spoiled in (sealed[:-1] + bytes([sealed[-1] ^ 1]), bytes([sealed[0] ^ 0x80])
                    + sealed[1:] if plaintext else sealed[:-2] + b"\0\0"):
        if spoiled != sealed:
            assert gcm_open(key, iv, aad, spoiled) is None


# -- the Retry packet -------------------------------------------------------------------------

SAMPLE: dict[str, Any] = dict(dcid=b"", scid=bytes.fromhex("f067a5502a4262b5"),
                              odcid=bytes.fromhex("8394c8f03e515708"), token=b"token",
                              unused=0xF)


def test_the_retry_is_rfc_9001_a4_byte_for_byte():
    assert retry_packet(QUIC_V1, **SAMPLE).hex() == (
        "ff000000010008f067a5502a4262b5746f6b656e04a265ba2eff4d829058fb3f0f2496ba")


def test_the_v2_retry_is_rfc_9369_a4_byte_for_byte():
    assert retry_packet(QUIC_V2, **SAMPLE).hex() == (
        "cf6b3343cf0008f067a5502a4262b5746f6b656ec8646ce8bfe33952d955543665dcc7b6")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([QUIC_V1, QUIC_V2]), st.binary(max_size=20), st.binary(max_size=20),
       st.binary(min_size=8, max_size=20), st.binary(max_size=100), st.integers(0, 15))
def test_retries_agree_with_the_reference(version, dcid, scid, odcid, token, unused):
    assert retry_packet(version, dcid, scid, odcid, token, unused) == \
        reference_retry(version, dcid, scid, odcid, token, unused)


# -- the worker's handling of Initials --------------------------------------------------------

KEY = RetryKey(5, bytes.fromhex("00112233445566778899aabbccddeeff"),
               bytes.fromhex("0102030405060708090a0b0c"))
OLD = RetryKey(2, bytes.fromhex("ffeeddccbbaa99887766554433221100"),
               bytes.fromhex("0c0b0a090807060504030201"))
KEYS = RetryKeys([KEY, OLD])
CLIENT4, CLIENT6 = "192.0.2.10", "2001:db8::10"


def routes(mode: str = "always", keys=(KEY, OLD)):
    return compile_routes(bytes(6), [CidConfig(0, 3, 4)],
                          [Backend("10.0.0.1", bytes([2, 0, 0, 0, 0, 1]))],
                          [Server(0, b"\x01\x01\x01", "10.0.0.1")],
                          TableOptions(knobs=RetrySpec(mode, 10, 100, 200).knobs(),
                                       retry_keys=tuple(keys)))


ROUTES = routes()


def initial(version: int = QUIC_V1, dcid: bytes = b"\x83" * 8, scid: bytes = b"\x5c" * 5,
            token: bytes = b"", size: int = 1200, v6: bool = False, sport: int = 50000
            ) -> bytes:
    kind = 0 if version == QUIC_V1 else 1
    head = (bytes([0xC0 | (kind << 4)]) + struct.pack("!I", version) + bytes([len(dcid)])
            + dcid + bytes([len(scid)]) + scid)
    head += (bytes([len(token)]) if len(token) < 64 else struct.pack("!H", 0x4000 | len(token)))
    payload = head + token + bytes(max(size - len(head) - len(token), 4))
    return (f.udp6_frame(payload, sport=sport) if v6 else f.udp4_frame(payload, sport=sport))


def parse_retry(frame: bytes | None, v6: bool) -> dict:
    """The Retry frame read with nothing of the code under test."""
    assert frame is not None, "no Retry was sent"
    ip = frame[14:]
    if v6:
        header, udp = ip[:40], ip[40:]
        assert header[0] >> 4 == 6 and header[6] == 17 and header[7] == 64
        assert struct.unpack_from("!H", header, 4)[0] == len(udp)
        src, dst = header[8:24], header[24:40]
        pseudo = src + dst + struct.pack("!I3xB", len(udp), 17)
    else:
        header, udp = ip[:20], ip[20:]
        assert header[0] == 0x45 and header[9] == 17 and f.checksum(header) == 0
        assert struct.unpack_from("!H", header, 2)[0] == 20 + len(udp)
        src, dst = header[12:16], header[16:20]
        pseudo = src + dst + struct.pack("!xBH", 17, len(udp))
    assert struct.unpack_from("!H", udp, 4)[0] == len(udp)
    assert f.checksum(pseudo + udp) == 0                  # the UDP checksum is right
    quic = udp[8:]
    version = struct.unpack_from("!I", quic, 1)[0]
    dcil = quic[5]
    scil = quic[6 + dcil]
    return {"src": str(ipaddress.ip_address(src)), "dst": str(ipaddress.ip_address(dst)),
            "sport": struct.unpack_from("!H", udp)[0], "dport": struct.unpack_from("!H", udp, 2)[0],
            "macs": frame[:12], "version": version, "first": quic[0],
            "dcid": quic[6:6 + dcil], "scid": quic[7 + dcil:7 + dcil + scil],
            "token": quic[7 + dcil + scil:-16], "quic": quic}


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=["v1", "v2"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_tokenless_initial_gets_a_retry_whose_token_opens_at_the_backend(version, v6):
    frame = initial(version, v6=v6)
    action, out, drop, counters = retry_screen(ROUTES.table, frame)
    assert (action, drop, counters) == ("send", "none", {"initials": 1})
    retry = parse_retry(out, v6)
    client = CLIENT6 if v6 else CLIENT4
    assert (retry["dst"], retry["dport"], retry["sport"]) == (client, 50000, 443)
    assert retry["macs"] == frame[6:12] + frame[:6]          # back to its sender
    assert retry["version"] == version
    assert retry["first"] >> 4 == (0xF if version == QUIC_V1 else 0xC)
    assert retry["dcid"] == b"\x5c" * 5 and len(retry["scid"]) == 8
    assert retry["scid"][0] >> 5 == 7            # QUIC-LB config 7: routed by its hash
    assert verify_integrity(retry["quic"], b"\x83" * 8)
    check = open_token(KEYS, retry["token"], client, 50000, retry["scid"], time.time())
    assert check.state is TokenState.VALID and check.odcid == b"\x83" * 8
    assert retry["token"][0] == KEY.sequence                 # the newest key, type 0
    # The retried Initial: to the Retry's source CID, with the token.
    again = initial(version, dcid=retry["scid"], token=retry["token"], v6=v6)
    assert retry_screen(ROUTES.table, again)[::2] == ("forward", "none")
    assert retry_screen(ROUTES.table, again)[3] == {"initials": 1, "retry_token_valid": 1}


def test_tokens_that_fail_are_dropped_and_counted():
    now = int(time.time())
    rscid = b"\xe1" * 8

    def with_token(token: bytes, sport: int = 50000) -> tuple:
        return retry_screen(ROUTES.table, initial(dcid=rscid, token=token, sport=sport))

    good = seal_token(KEY, CLIENT4, 50000, b"\x83" * 8, rscid, now + 10)
    assert with_token(good)[0] == "forward"
    assert with_token(seal_token(OLD, CLIENT4, 50000, b"\x83" * 8, rscid, now + 10))[0] \
        == "forward"                                          # every listed key opens
    cases = {
        "forged": (bytes([0x05]) + os.urandom(50), 50000),
        "wrong address": (seal_token(KEY, "192.0.2.11", 50000, b"\x83" * 8, rscid,
                                     now + 10), 50000),
        "wrong port": (good, 50001),
        "wrong CID": (seal_token(KEY, CLIENT4, 50000, b"\x83" * 8, b"\xe2" * 8, now + 10),
                      50000),
        "unknown key": (seal_token(RetryKey(9, KEY.key, KEY.iv), CLIENT4, 50000,
                                   b"\x83" * 8, rscid, now + 10), 50000),
        "short original CID": (seal_token(KEY, CLIENT4, 50000, b"\x83" * 7, rscid, now + 10),
                               50000),
    }
    for name, (token, sport) in cases.items():
        action, _, drop, counters = with_token(token, sport)
        assert (action, drop) == ("drop", "token"), name
        assert counters == {"initials": 1, "retry_token_invalid": 1}, name
    expired = seal_token(KEY, CLIENT4, 50000, b"\x83" * 8, rscid, now - 5)
    assert with_token(expired)[::2] == ("drop", "token")
    assert with_token(expired)[3] == {"initials": 1, "retry_token_expired": 1}
    assert with_token(seal_token(KEY, CLIENT4, 50000, b"\x83" * 8, rscid, now - 1))[0] == \
        "forward"                                             # 2 s of clock skew


def test_new_token_tokens_pass_when_valid_and_get_a_retry_when_not():
    now = int(time.time())
    valid = seal_new_token(KEY, CLIENT4, now + 60, opaque=b"cwnd")
    assert retry_screen(ROUTES.table, initial(token=valid))[::2] == ("forward", "none")
    for token in (seal_new_token(KEY, "192.0.2.99", now + 60),
                  seal_new_token(KEY, CLIENT4, now - 60)):
        action, out, _, _ = retry_screen(ROUTES.table, initial(token=token))
        assert action == "send" and verify_integrity(parse_retry(out, False)["quic"],
                                                     b"\x83" * 8)


def initial_from(source: str, **kw) -> bytes:
    """An Initial from an IPv6 ``source``."""
    frame = initial(v6=True, **kw)
    return frame[:22] + ipaddress.ip_address(source).packed + frame[38:]


def test_a_token_to_a_servers_cid_is_checked_and_only_a_validated_4_tuple_passes():
    """After a Retry, the client's later Initials go to the CID its server chose, with
    the token bound to the Retry's CID: they pass only from the 4-tuple whose token was
    valid. Junk tokens with a routable CID are dropped."""
    now = int(time.time())
    rscid, server_cid = b"\xe1" * 8, CidConfig(0, 3, 4).encode(b"\x01\x01\x01", bytes(4))
    token = seal_token(KEY, CLIENT4, 50000, b"\x83" * 8, rscid, now + 10)
    admitted = FlowTable(RETRY_ADMITTED)
    later = initial(dcid=server_cid, token=token)
    junk = initial(dcid=server_cid, token=bytes([0x05]) + os.urandom(60))
    for frame in (later, junk):
        action, _, drop, counters = retry_screen(ROUTES.table, frame, admitted=admitted)
        assert (action, drop) == ("drop", "token")
        assert counters == {"initials": 1, "retry_token_invalid": 1}
    # The retried Initial, to the Retry's CID: valid, and its 4-tuple is admitted.
    retried = initial(dcid=rscid, token=token)
    assert retry_screen(ROUTES.table, retried, admitted=admitted)[::2] == ("forward", "none")
    assert retry_screen(ROUTES.table, later, admitted=admitted)[::2] == ("forward", "none")
    assert retry_screen(ROUTES.table, later, admitted=admitted)[3] == \
        {"initials": 1, "retry_tuple_admitted": 1}
    # Admitted is this 4-tuple's alone, and only while the token lasts.
    other_port = initial(dcid=server_cid, token=token, sport=50001)
    assert retry_screen(ROUTES.table, other_port, admitted=admitted)[::2] == ("drop", "token")
    assert retry_screen(ROUTES.table, later, admitted=admitted, now=now + 13)[::2] == \
        ("drop", "token")


def test_an_ipv4_token_is_refused_from_an_ipv6_source_shaped_like_its_pseudo_header():
    now = int(time.time())
    rscid = b"\xe1" * 8
    token = seal_token(KEY, CLIENT4, 50000, b"\x83" * 8, rscid, now + 10)
    shaped = "c000:20a::"                       # 192.0.2.10, then twelve zero octets
    assert ipaddress.ip_address(shaped).packed[:4] == ipaddress.ip_address(CLIENT4).packed
    action, _, drop, counters = retry_screen(ROUTES.table,
                                             initial_from(shaped, dcid=rscid, token=token))
    assert (action, drop, counters["retry_token_invalid"]) == ("drop", "token", 1)
    assert open_token(KEYS, token, shaped, 50000, rscid, now).state is TokenState.INVALID
    assert open_token(KEYS, token, CLIENT4, 50000, rscid, now).state is TokenState.VALID


def test_an_initial_whose_dcid_is_under_8_octets_is_dropped_not_answered():
    """RFC 9000 7.2: a client's first DCID is at least 8 octets; a Retry for a shorter
    one carries a token that can never validate (its original DCID is too short)."""
    for phase in ("active", "transition"):
        action, out, drop, counters = retry_screen(ROUTES.table, initial(dcid=b"\x83" * 7),
                                                   phase=phase)
        assert (action, out, drop) == ("drop", None, "short_dcid"), phase
        assert counters == {"initials": 1}, phase
    bad_new_token = seal_new_token(KEY, "192.0.2.99", int(time.time()) + 60)
    assert retry_screen(ROUTES.table, initial(dcid=b"\x83" * 4, token=bad_new_token))[::2] \
        == ("drop", "short_dcid")
    assert retry_screen(ROUTES.table, initial(dcid=b"\x83" * 8))[0] == "send"


def test_what_the_offload_leaves_alone_or_refuses():
    screen = retry_screen
    # Other versions go through untouched; so do short headers and every Initial
    # while inactive.
    other = initial().replace(struct.pack("!I", QUIC_V1), struct.pack("!I", 0xFF00001D), 1)
    assert screen(ROUTES.table, other)[::2] == ("forward", "none")
    assert screen(ROUTES.table, f.udp4_frame(f.quic_short(os.urandom(8))))[::2] == \
        ("forward", "none")
    assert screen(ROUTES.table, initial(), phase="inactive")[::2] == ("forward", "none")
    # A v1 long header that is not an Initial (Handshake) is no business of ours.
    handshake = initial()
    handshake = handshake[:42] + bytes([0xE0]) + handshake[43:]
    assert screen(ROUTES.table, handshake)[::2] == ("forward", "none")
    # An Initial in a datagram under 1200 octets is never answered (RFC 9000 §14.1).
    assert screen(ROUTES.table, initial(size=600))[::2] == ("drop", "short_initial")
    # Transition: a Retry and the Initial forwarded too.
    action, out, _, _ = screen(ROUTES.table, initial(), phase="transition")
    assert action == "send_and_forward" and parse_retry(out, False)["dcid"] == b"\x5c" * 5
    # A token length past the datagram's end: malformed.
    broken = initial(token=b"t" * 10)
    cut = bytearray(broken)
    cut[42 + 1 + 4 + 1 + 8 + 1 + 5] = 0x7F             # token length 0x3f... past the end
    cut[42 + 1 + 4 + 1 + 8 + 1 + 5 + 1] = 0xFF
    assert screen(ROUTES.table, bytes(cut))[::2] == ("drop", "not_quic")


def test_the_retry_section_of_lb_toml(tmp_path):
    path = tmp_path / "lb.toml"
    base = ('[[configs]]\nconfig_id = 0\nserver_id_length = 3\nnonce_length = 4\n'
            '  [[configs.servers]]\n  id = "010101"\n  address = "10.0.0.1"\n')
    path.write_text(base + f'[retry]\nmode = "load"\nload_trigger = 5000\n'
                    f'[[retry.keys]]\nsequence = 5\nkey = "{KEY.key.hex()}"\n'
                    f'iv = "{KEY.iv.hex()}"\n')
    retry = load_route_config(path).retry
    assert (retry.mode, retry.load_trigger, retry.token_lifetime_s, retry.transition_ms) == \
        ("load", 5000, 10, 200)
    assert retry.keys == (KEY,) and RetryKeys.from_lb_toml(path).newest == KEY
    assert KEY.key.hex() not in repr(retry) and KEY.iv.hex() not in repr(retry)
    bad = {
        'mode = "sometimes"': "retry.mode = 'sometimes': must be one of off, always, load",
        f'mode = "load"\n[[retry.keys]]\nsequence = 1\nkey = "{KEY.key.hex()}"\n'
        f'iv = "{KEY.iv.hex()}"': "retry.load_trigger: missing",
        'mode = "always"': "retry.keys: mode 'always' needs at least one [[retry.keys]]",
        f'mode = "always"\n[[retry.keys]]\nsequence = 1\nkey = "{KEY.key.hex()[:-2]}"\n'
        f'iv = "{KEY.iv.hex()}"': "retry.keys[0].key = (hidden): must be 32 hex digits",
        f'mode = "always"\n[[retry.keys]]\nsequence = 1\nkey = "{KEY.key.hex()}"\n'
        f'iv = "{KEY.iv.hex()}ab"': "retry.keys[0].iv = (hidden): must be 24 hex digits",
        f'mode = "always"\n[[retry.keys]]\nsequence = 128\nkey = "{KEY.key.hex()}"\n'
        f'iv = "{KEY.iv.hex()}"': "retry.keys[0].sequence = 128: must be between 0 and 127",
        'mode = "always"\n' + "".join(
            f'[[retry.keys]]\nsequence = 3\nkey = "{KEY.key.hex()}"\niv = "{KEY.iv.hex()}"\n'
            for _ in range(2)): "retry.keys[1].sequence = 3: duplicate of retry.keys[0].sequence",
    }
    for text, message in bad.items():
        path.write_text(base + "[retry]\n" + text + "\n")
        with pytest.raises(ConfigError) as raised:
            load_route_config(path)
        assert message in str(raised.value), str(raised.value)
        assert KEY.key.hex()[:20] not in str(raised.value)
        assert KEY.iv.hex()[:16] not in str(raised.value)
