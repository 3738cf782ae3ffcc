"""The Retry offload's wire formats, in Python: the reference the packet path is tested
against, and what backends validate tokens with (pesigitg.backend.aioquic).

draft-ietf-quic-retry-offload-00, shared-state mode (§4): the balancer and the backends
share AES-128-GCM keys, each with a 7-bit sequence number. A token is

    Token Type (1) | Key Sequence (7) | Unique Token Number (96) |
    AES-128-GCM(body) | tag (128)

with nonce = IV xor the unique token number, and as associated data the pseudo-header

    client IP address (128, IPv4 zero-padded) | Token Type | Key Sequence |
    Unique Token Number | [RSCID length (8) | Retry Source Connection ID]   (type 0)

A type-0 (Retry) token's body is: expiry (64, POSIX seconds), ODCID length (8), the
client's original Destination Connection ID, the client's UDP port (16); a type-1
(NEW_TOKEN) token's body is the expiry and opaque data. The Retry packet and its
integrity tag are RFC 9000 §17.2.5 and RFC 9001 §5.8 (v1), RFC 9369 §3.3 (v2).
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pesigitg.routing import lbtoml
from pesigitg.routing.route_config import RetryKey, RetrySpec, load_route_config

__all__ = ["INTEGRITY", "QUIC_V1", "QUIC_V2", "RetryKey", "RetryKeys", "RetrySpec",
           "TokenCheck", "TokenState", "initial_type", "open_token", "retry_packet",
           "seal_token", "verify_integrity"]

QUIC_V1, QUIC_V2 = 0x00000001, 0x6B3343CF
# Retry integrity key and nonce per version (RFC 9001 §5.8, RFC 9369 §3.3.3).
INTEGRITY = {
    QUIC_V1: (bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"),
              bytes.fromhex("461599d35d632bf2239825bb")),
    QUIC_V2: (bytes.fromhex("8fb4b01b56ac48e260fbcbcead7ccc92"),
              bytes.fromhex("d86969bc2d7c6d9990efb04a")),
}
# Long-header packet types (bits 4-5 of the first octet) per version.
_TYPES = {QUIC_V1: {"initial": 0, "retry": 3}, QUIC_V2: {"initial": 1, "retry": 0}}
RETRY, NEW_TOKEN = 0, 1
UTN_LEN, TAG_LEN = 12, 16
CLOCK_SKEW_S = 2            # the draft: SHOULD allow 2 s of skew


class RetryKeys:
    """The shared token keys: the newest (highest sequence) seals, every one opens.
    ``RetryKeys.from_lb_toml(path)`` reads them from pesigitgd's route config."""

    def __init__(self, keys: Iterable[RetryKey],
                 lifetime_s: int = lbtoml.default("retry.token_lifetime_s")) -> None:
        self.by_sequence: dict[int, RetryKey] = {}
        for key in keys:
            if key.sequence in self.by_sequence:
                raise ValueError(f"key sequence {key.sequence} is given twice")
            self.by_sequence[key.sequence] = key
        if not self.by_sequence:
            raise ValueError("no token keys")
        self.lifetime_s = lifetime_s

    @classmethod
    def from_lb_toml(cls, path: os.PathLike[str] | str) -> RetryKeys:
        """The ``[retry]`` keys of an lb.toml (validated as pesigitgd validates them)."""
        retry = load_route_config(Path(path)).retry
        return cls(retry.keys, retry.token_lifetime_s)

    @property
    def newest(self) -> RetryKey:
        return self.by_sequence[max(self.by_sequence)]

    def __repr__(self) -> str:
        return f"RetryKeys(sequences={sorted(self.by_sequence)})"


def _ip16(address: str) -> bytes:
    """The pseudo-header's address: IPv4 in four octets then zeros (an IPv4-mapped
    IPv6 address, as a dual-stack socket reports IPv4 peers, counts as IPv4)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed + bytes(16 - len(ip.packed))


def _aad(client: str, first: int, utn: bytes, rscid: bytes | None) -> bytes:
    aad = _ip16(client) + bytes([first]) + utn
    return aad if rscid is None else aad + bytes([len(rscid)]) + rscid


def seal_token(key: RetryKey, client: str, port: int, odcid: bytes, rscid: bytes,
               expiry: int, *, utn: bytes | None = None) -> bytes:
    """A type-0 (Retry) token for a client at ``client``:``port`` whose Initial had
    DCID ``odcid``, answered by a Retry with source CID ``rscid``."""
    utn = os.urandom(UTN_LEN) if utn is None else utn
    first = (RETRY << 7) | key.sequence
    body = struct.pack("!QB", expiry, len(odcid)) + odcid + struct.pack("!H", port)
    nonce = bytes(a ^ b for a, b in zip(key.iv, utn, strict=True))
    return bytes([first]) + utn + AESGCM(key.key).encrypt(nonce, body,
                                                           _aad(client, first, utn, rscid))


def seal_new_token(key: RetryKey, client: str, expiry: int, opaque: bytes = b"",
                   utn: bytes | None = None) -> bytes:
    """A type-1 (NEW_TOKEN) token, as a server in shared-state mode makes them."""
    utn = os.urandom(UTN_LEN) if utn is None else utn
    first = (NEW_TOKEN << 7) | key.sequence
    nonce = bytes(a ^ b for a, b in zip(key.iv, utn, strict=True))
    return bytes([first]) + utn + AESGCM(key.key).encrypt(
        nonce, struct.pack("!Q", expiry) + opaque, _aad(client, first, utn, None))


class TokenState(Enum):
    VALID = "valid"
    INVALID = "invalid"
    EXPIRED = "expired"


@dataclass(frozen=True)
class TokenCheck:
    state: TokenState
    kind: int                   # RETRY (0) or NEW_TOKEN (1)
    odcid: bytes | None = None  # a valid Retry token's original DCID
    why: str = ""


def open_token(keys: RetryKeys | Mapping[int, RetryKey], token: bytes, client: str,
               port: int, dcid: bytes, now: float) -> TokenCheck:
    """Check a token an Initial from ``client``:``port`` to ``dcid`` carries."""
    by_sequence = keys.by_sequence if isinstance(keys, RetryKeys) else keys
    if not token:
        return TokenCheck(TokenState.INVALID, RETRY, why="empty")
    address = ipaddress.ip_address(client)
    if address.version == 6 and not address.packed[4:].strip(b"\0"):
        # Its pseudo-header would be an IPv4 address's (4 octets, then 12 zeros).
        return TokenCheck(TokenState.INVALID, token[0] >> 7,
                          why="an IPv6 source shaped like an IPv4 pseudo-header")
    kind, sequence = token[0] >> 7, token[0] & 0x7F
    key = by_sequence.get(sequence)
    if key is None:
        return TokenCheck(TokenState.INVALID, kind, why=f"unknown key sequence {sequence}")
    if len(token) < 1 + UTN_LEN + 8 + TAG_LEN:
        return TokenCheck(TokenState.INVALID, kind, why="too short")
    utn = token[1:1 + UTN_LEN]
    nonce = bytes(a ^ b for a, b in zip(key.iv, utn, strict=True))
    try:
        body = AESGCM(key.key).decrypt(nonce, token[1 + UTN_LEN:],
                                       _aad(client, token[0], utn,
                                            dcid if kind == RETRY else None))
    except InvalidTag:
        return TokenCheck(TokenState.INVALID, kind, why="not authentic")
    expiry = struct.unpack_from("!Q", body)[0]
    odcid = None
    if kind == RETRY:
        odcil = body[8] if len(body) > 8 else 0
        if not 8 <= odcil <= 20 or len(body) < 8 + 1 + odcil + 2:
            return TokenCheck(TokenState.INVALID, kind, why="bad original DCID length")
        odcid = body[9:9 + odcil]
        if struct.unpack_from("!H", body, 9 + odcil)[0] != port:
            return TokenCheck(TokenState.INVALID, kind, why="another client port")
    if expiry + CLOCK_SKEW_S < now:
        return TokenCheck(TokenState.EXPIRED, kind, why="expired")
    return TokenCheck(TokenState.VALID, kind, odcid)


def initial_type(version: int) -> int | None:
    """The long-header type bits of an Initial in ``version`` (None: not v1 or v2)."""
    types = _TYPES.get(version)
    return None if types is None else types["initial"]


def retry_packet(version: int, dcid: bytes, scid: bytes, odcid: bytes, token: bytes,
                 unused: int = 0) -> bytes:
    """A Retry (RFC 9000 §17.2.5) to a client whose Initial had source CID ``dcid`` and
    destination CID ``odcid``, with our source CID ``scid``; ``unused``: the first
    octet's four low bits."""
    first = 0xC0 | (_TYPES[version]["retry"] << 4) | (unused & 0x0F)
    packet = (bytes([first]) + struct.pack("!I", version) + bytes([len(dcid)]) + dcid
              + bytes([len(scid)]) + scid + token)
    key, nonce = INTEGRITY[version]
    return packet + AESGCM(key).encrypt(nonce, b"", bytes([len(odcid)]) + odcid + packet)


def verify_integrity(packet: bytes, odcid: bytes) -> bool:
    """Whether a Retry's integrity tag is right for the client's original DCID."""
    version = struct.unpack_from("!I", packet, 1)[0]
    if version not in INTEGRITY or len(packet) < 7 + TAG_LEN:
        return False
    key, nonce = INTEGRITY[version]
    try:
        AESGCM(key).decrypt(nonce, packet[-TAG_LEN:],
                            bytes([len(odcid)]) + odcid + packet[:-TAG_LEN])
    except InvalidTag:
        return False
    return True
