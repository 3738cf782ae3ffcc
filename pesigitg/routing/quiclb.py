"""Reference QUIC-LB connection-ID codec (draft-ietf-quic-load-balancers-21).

Pure Python over ``cryptography``: slow, simple, and the truth that the Cython fast
path and the XDP program are tested against. Section numbers refer to draft-21.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pesigitg._fastpath import CID_CONFIGS, CID_MAX_LEN, NONCE_MIN, PLAINTEXT_MAX, SERVER_ID_MIN

__all__ = [
    "CID_MAX_LEN",
    "CONFIG_ID_UNROUTABLE",
    "CidConfig",
    "CidEncoder",
    "NonceSpaceExhausted",
    "first_octet_config_id",
    "unroutable_cid",
]

# Limits come from the ABI header (bpf/include/pesigitg_abi.h): CID_MAX_LEN (RFC 9000
# §17.2), and §3's config ids 0..6; the next one, 0b111, marks an unroutable CID.
CONFIG_ID_UNROUTABLE = CID_CONFIGS
KEY_LEN = 16
AES_BLOCK = 16

Random = Callable[[int], bytes]


class NonceSpaceExhausted(RuntimeError):
    """Every nonce of a config has been issued: the server must stop issuing CIDs."""


def first_octet_config_id(cid: bytes) -> int:
    """The config id carried in the top three bits of a CID's first octet (§3)."""
    if not cid:
        raise ValueError("empty connection ID has no config id")
    return cid[0] >> 5


def unroutable_cid(length: int, random: Random = os.urandom) -> bytes:
    """A random CID marked unroutable (§3.1): config id 0b111, length self-encoded."""
    if not 1 <= length <= CID_MAX_LEN:
        raise ValueError(f"CID length {length} is outside 1..{CID_MAX_LEN}")
    return bytes([(CONFIG_ID_UNROUTABLE << 5) | (length - 1)]) + random(length - 1)


class CidConfig:
    """One QUIC-LB configuration: config id, lengths and an optional 16-octet key.

    ``mode`` follows from the parameters (§5): no key is ``plaintext``; a key with
    server_id_len + nonce_len == 16 is ``single_pass`` (one AES-128-ECB block); any
    other keyed length is ``four_pass`` (Feistel network, §5.5).
    """

    __slots__ = (
        "_decryptor",
        "_encryptor",
        "config_id",
        "encode_length",
        "key",
        "mode",
        "nonce_len",
        "server_id_len",
    )

    def __init__(self, config_id: int, server_id_len: int, nonce_len: int,
                 key: bytes | None = None, encode_length: bool = False) -> None:
        if not 0 <= config_id < CONFIG_ID_UNROUTABLE:
            raise ValueError(f"config_id {config_id} is outside 0..6 (7 marks unroutable CIDs)")
        if server_id_len < SERVER_ID_MIN:
            raise ValueError(f"server_id_len {server_id_len} is below the minimum of 1")
        if nonce_len < NONCE_MIN:
            raise ValueError(f"nonce_len {nonce_len} is below the minimum of 4")
        if server_id_len + nonce_len > PLAINTEXT_MAX:
            raise ValueError(f"server_id_len + nonce_len = {server_id_len + nonce_len} "
                             f"exceeds the maximum of {PLAINTEXT_MAX}")
        if key is not None and len(key) != KEY_LEN:
            raise ValueError(f"key is {len(key)} octets, AES-128 needs 16")
        self.config_id = config_id
        self.server_id_len = server_id_len
        self.nonce_len = nonce_len
        self.key = None if key is None else bytes(key)
        self.encode_length = encode_length
        if key is None:
            self.mode = "plaintext"
            self._encryptor = self._decryptor = None
        else:
            cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())
            self._encryptor = cipher.encryptor()
            self._decryptor = cipher.decryptor()
            self.mode = "single_pass" if self.plaintext_len == AES_BLOCK else "four_pass"

    def __repr__(self) -> str:
        # Never show the key: configs end up in logs.
        keyed = "set" if self.key is not None else "none"
        return (f"CidConfig(config_id={self.config_id}, server_id_len={self.server_id_len}, "
                f"nonce_len={self.nonce_len}, key={keyed}, encode_length={self.encode_length}, "
                f"mode={self.mode!r})")

    @property
    def plaintext_len(self) -> int:
        return self.server_id_len + self.nonce_len

    @property
    def cid_len(self) -> int:
        """Length of the CIDs this config produces: first octet + encoded block."""
        return 1 + self.plaintext_len

    # -- wire format -----------------------------------------------------------------

    def first_octet(self, cid_len: int, random: Random = os.urandom) -> int:
        """§3: config id in the top 3 bits; low 5 bits are the length - 1 or random."""
        low = (cid_len - 1) if self.encode_length else random(1)[0] & 0x1F
        return (self.config_id << 5) | low

    def encode(self, server_id: bytes, nonce: bytes, *, extra: bytes = b"",
               random: Random = os.urandom) -> bytes:
        """Build the CID for ``server_id`` and ``nonce``; ``extra`` octets are appended."""
        if len(server_id) != self.server_id_len:
            raise ValueError(f"server ID is {len(server_id)} octets, config {self.config_id} "
                             f"needs {self.server_id_len}")
        if len(nonce) != self.nonce_len:
            raise ValueError(f"nonce is {len(nonce)} octets, config {self.config_id} "
                             f"needs {self.nonce_len}")
        length = self.cid_len + len(extra)
        if length > CID_MAX_LEN:
            raise ValueError(f"CID would be {length} octets, the maximum is {CID_MAX_LEN}")
        block = self._encrypt(bytes(server_id) + bytes(nonce))
        return bytes([self.first_octet(length, random)]) + block + bytes(extra)

    def decode(self, cid: bytes) -> tuple[bytes, bytes]:
        """Recover ``(server_id, nonce)`` from a CID of this config (§5)."""
        if len(cid) < self.cid_len:
            raise ValueError(f"CID is {len(cid)} octets, config {self.config_id} "
                             f"needs at least {self.cid_len}")
        if len(cid) > CID_MAX_LEN:
            raise ValueError(f"CID is {len(cid)} octets, the maximum is {CID_MAX_LEN}")
        found = first_octet_config_id(cid)
        if found != self.config_id:
            raise ValueError(f"CID carries config id {found}, this config is {self.config_id}")
        plain = self._decrypt(bytes(cid[1:self.cid_len]))
        return plain[:self.server_id_len], plain[self.server_id_len:]

    # -- §5.3 plaintext, §5.4 single pass, §5.5 four pass --------------------------------

    def _encrypt(self, plain: bytes) -> bytes:
        if self.mode == "plaintext":
            return plain
        if self.mode == "single_pass":
            return self._aes_encrypt(plain)
        return self._feistel(plain, rounds=(1, 2, 3, 4))

    def _decrypt(self, block: bytes) -> bytes:
        if self.mode == "plaintext":
            return block
        if self.mode == "single_pass":
            assert self._decryptor is not None
            return self._decryptor.update(block)
        return self._feistel(block, rounds=(4, 3, 2, 1))

    def _aes_encrypt(self, block: bytes) -> bytes:
        assert self._encryptor is not None
        return self._encryptor.update(block)

    def _round(self, pass_no: int, half_value: bytes) -> bytes:
        """§5.5.1: truncate(AES(expand(L, pass, half))) to the half length."""
        n = self.plaintext_len
        block = half_value + bytes(AES_BLOCK - 2 - len(half_value)) + bytes([n, pass_no])
        return self._aes_encrypt(block)[:len(half_value)]

    def _feistel(self, data: bytes, rounds: tuple[int, ...]) -> bytes:
        """§5.5.2 four-pass Feistel; ``rounds`` (1,2,3,4) encrypts, (4,3,2,1) decrypts.

        Odd passes modify the right half from the left, even passes the left from the
        right. With an odd length both halves hold the middle octet: the left keeps its
        high nibble, the right its low nibble (the draft's pseudocode masks ``left_1``
        where ``right_1`` is meant; this is the consistent reading).
        """
        n = len(data)
        half = (n + 1) // 2
        odd = n % 2 == 1
        left = bytearray(data[:half])
        right = bytearray(data[n - half:])
        if odd:
            left[-1] &= 0xF0
            right[0] &= 0x0F
        for pass_no in rounds:
            if pass_no % 2:
                mask = self._round(pass_no, bytes(left))
                right = bytearray(a ^ b for a, b in zip(right, mask, strict=True))
                if odd:
                    right[0] &= 0x0F
            else:
                mask = self._round(pass_no, bytes(right))
                left = bytearray(a ^ b for a, b in zip(left, mask, strict=True))
                if odd:
                    left[-1] &= 0xF0
        if odd:
            return bytes(left[:-1]) + bytes([left[-1] | right[0]]) + bytes(right[1:])
        return bytes(left + right)


class CidEncoder:
    """Server-side CID issuer (§5.2): one config, one server ID, a nonce counter.

    The counter starts at a random value and wraps; when it comes back to its start
    every nonce has been used once and :class:`NonceSpaceExhausted` is raised, since
    reusing a nonce would let observers link connection IDs. ``config=None`` issues
    unroutable CIDs of ``length`` octets (§3.1).
    """

    def __init__(self, config: CidConfig | None, server_id: bytes | None = None, *,
                 extra_len: int = 0, length: int = 8, random: Random = os.urandom) -> None:
        self.config = config
        self._random = random
        if config is None:
            unroutable_cid(length, random)  # validates the length with its message
            self.cid_len = length
            self._server_id = b""
            self._first = self._next = 0
            self._space = 0
            return
        if server_id is None or len(server_id) != config.server_id_len:
            got = "none" if server_id is None else f"{len(server_id)} octets"
            raise ValueError(f"server ID is {got}, config {config.config_id} needs "
                             f"{config.server_id_len} octets")
        if extra_len < 0 or config.cid_len + extra_len > CID_MAX_LEN:
            raise ValueError(f"extra_len {extra_len} makes the CID longer than {CID_MAX_LEN} "
                             f"octets (config {config.config_id} uses {config.cid_len})")
        self.cid_len = config.cid_len + extra_len
        self._server_id = bytes(server_id)
        self._extra_len = extra_len
        self._space = 1 << (8 * config.nonce_len)
        self._first = int.from_bytes(random(config.nonce_len), "big")
        self._next = self._first
        self._issued = 0

    @property
    def remaining(self) -> int:
        """Nonces left before the space is exhausted (unbounded for unroutable CIDs)."""
        if self.config is None:
            return -1
        return self._space - self._issued

    def new_cid(self) -> bytes:
        config = self.config
        if config is None:
            return unroutable_cid(self.cid_len, self._random)
        if self._issued >= self._space:
            raise NonceSpaceExhausted(
                f"all {self._space} nonces of config {config.config_id} are used; "
                "rotate to a new config before issuing more CIDs")
        nonce = self._next.to_bytes(config.nonce_len, "big")
        self._next = (self._next + 1) % self._space
        self._issued += 1
        extra = self._random(self._extra_len) if self._extra_len else b""
        return config.encode(self._server_id, nonce, extra=extra, random=self._random)
