"""The kernel tier: QUIC-LB decode and forwarding inside the XDP program.

The XDP program (``tier_forward`` in bpf/pesigitg.bpf.c) forwards a steered QUIC
datagram itself (XDP_TX) when its connection ID names, in a config the tier decodes, a
server that can take it; everything else goes to the workers as before. Its table is
made here from the very route table the workers get (the same backends, MACs, health
and drains), so both tiers send a frame to the same MAC.

Which configs it decodes is the ``xdp_decode`` setting, by the rule of :func:`choose`:
``off``, ``plaintext``, ``all`` or ``auto``. Keyed configs are decrypted with the
kernel's bpf_crypto kfuncs, by the program's crypto build only (steering.py chooses the
build); their AES contexts are made in the kernel from each key (``set_tier_key``).

The table has two generations. An install writes the generation the program does not
read (its servers, then its table), then switches ``settings.tier_generation`` to it:
no frame is ever decided by a half-written table. Servers sit in an array, hashed into
buckets of four with a seed chosen here so that none overflows (:func:`place`): the
program finds a server with a multiply, a shift and at most four compares, no hash
map and no helper call. The maps are the steering program's,
handed over on a restart with the others; the successor installs its own table.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pesigitg._fastpath import BACKEND_SLOTS, CID_CONFIGS, CID_MODES, CID_UNSET, MAPS
from pesigitg.daemon.steering import Steering
from pesigitg.routing.routes import CompiledRoutes

__all__ = ["DECODE_MODES", "TierChoice", "Written", "bucket", "choose", "install",
           "kernel_aes_driver", "place", "tier_counts"]

log = logging.getLogger("pesigitg")

DECODE_MODES = ("off", "plaintext", "all", "auto")
SERVER_ID_MAX = 15
NO_SLOT = 0xFFFF
# The servers' buckets (pesigitg_abi.h: pes_tier_bucket and its constants).
EMPTY = 0xFF
BUCKET_SLOTS = 4
BUCKET_BITS_MIN, BUCKET_BITS_MAX = 4, 13
K1, K2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F
COUNT_STRIDE = BACKEND_SLOTS + 1   # tier_counts: per config id, a count per slot + none
SEEDS = 64                  # seeds tried before a table is given up as unplaceable
MASK = (1 << 64) - 1
# struct pes_tier_table, pes_tier_server (pesigitg_abi.h); the maps' sizes (from the
# object's BTF) are checked against these at every install.
_TABLE = struct.Struct("<BB6sQ" + "BBBB" * CID_CONFIGS + "4x")
_SERVER = struct.Struct(f"<B{SERVER_ID_MAX}s6sH")
_EMPTY = _SERVER.pack(EMPTY, bytes(SERVER_ID_MAX), bytes(6), NO_SLOT)


def bucket(config_id: int, server_id: bytes, seed: int, bits: int) -> int:
    """pes_tier_bucket: where the program looks for this server."""
    head = bytes([config_id]) + server_id.ljust(SERVER_ID_MAX, b"\0")
    lo, hi = int.from_bytes(head[:8], "little"), int.from_bytes(head[8:], "little")
    h = ((((lo ^ seed) * K1) & MASK) + hi) * K2 & MASK
    return h >> (64 - bits)


def place(servers: dict[tuple[int, bytes], bytes]) -> tuple[int, int, list[bytes]] | None:
    """(seed, bucket bits, slots) holding ``servers`` ((config id, server ID) -> entry)
    with no bucket over BUCKET_SLOTS, or None when they do not fit."""
    bits = max(BUCKET_BITS_MIN, (4 * len(servers) - 1).bit_length())
    if bits > BUCKET_BITS_MAX:
        return None
    for seed in range(1, SEEDS + 1):
        slots = [_EMPTY] * (BUCKET_SLOTS << bits)
        fill = [0] * (1 << bits)
        for (config_id, server_id), entry in sorted(servers.items()):
            b = bucket(config_id, server_id, seed, bits)
            if fill[b] == BUCKET_SLOTS:
                break
            slots[b * BUCKET_SLOTS + fill[b]] = entry
            fill[b] += 1
        else:
            return seed, bits, slots
    return None


@dataclass(frozen=True)
class TierChoice:
    """Where each configured config id is decoded: "xdp" or "af_xdp" (and why)."""
    decode: str
    configs: dict[int, tuple[str, str]]     # config id -> (path, reason)

    def describe(self) -> dict[str, object]:
        return {"xdp_decode": self.decode,
                "configs": {str(c): {"path": path, "why": why}
                            for c, (path, why) in sorted(self.configs.items())}}

    @property
    def in_kernel(self) -> list[int]:
        return sorted(c for c, (path, _) in self.configs.items() if path == "xdp")


def choose(decode: str, modes: dict[int, str], crypto: bool = False, copy: bool = True,
           aes_driver: str | None = None) -> TierChoice:
    """The rule, per config id (``modes``: config id -> "plaintext", "single_pass" or
    "four_pass"), given whether the loaded program can decrypt (``crypto``: the kernel
    has the bpf_crypto kfuncs), whether the sockets bound in copy mode and the kernel's
    ecb(aes) driver:

    * ``off``: every config to the workers;
    * ``plaintext``: plaintext configs in XDP, keyed ones to the workers;
    * ``all``: every config in XDP (the keyed ones only with the kfuncs);
    * ``auto``: plaintext in XDP; keyed configs, when the kfuncs are there: in XDP if
      the sockets copy every frame (on one core, a copy to a worker and back costs more
      than the three or four kernel AES calls of a four-pass decode: make bench); with
      zero-copy sockets, single-pass in XDP only if the kernel's AES is AES-NI
      (``aesni`` in the driver's name), four-pass with the workers (their batch AES
      costs a few ns a packet against three or four kernel AES calls)."""
    configs: dict[int, tuple[str, str]] = {}
    fast_aes = aes_driver is not None and "aesni" in aes_driver
    for config_id, mode in sorted(modes.items()):
        if decode == "off":
            configs[config_id] = ("af_xdp", "xdp_decode = off")
        elif mode == "plaintext":
            configs[config_id] = ("xdp", "plaintext: no key to decode")
        elif decode == "plaintext":
            configs[config_id] = ("af_xdp", f"{mode}: xdp_decode = plaintext")
        elif not crypto:
            configs[config_id] = ("af_xdp", f"{mode}: this kernel has no bpf_crypto kfuncs")
        elif decode == "all" or copy or (fast_aes and mode == "single_pass"):
            why = "xdp_decode = all" if decode == "all" else "copy-mode sockets" if copy \
                else f"the kernel's AES is {aes_driver}"
            configs[config_id] = ("xdp", f"{mode}: kernel AES ({aes_driver or '?'}), {why}")
        elif mode == "four_pass":
            configs[config_id] = ("af_xdp", "four_pass: zero-copy sockets: decoded by the "
                                            "workers (3-4 kernel AES calls a packet in XDP "
                                            "cost more)")
        else:
            configs[config_id] = ("af_xdp", f"{mode}: zero-copy sockets and the kernel's AES "
                                            f"is {aes_driver or 'unknown'} (not AES-NI)")
    return TierChoice(decode, configs)


@cache
def kernel_aes_driver() -> str | None:
    """The driver of the kernel's ecb(aes) of highest priority (/proc/crypto), read once
    (every table change asks)."""
    try:
        text = Path("/proc/crypto").read_text()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if fields.get("name") == "ecb(aes)" and fields.get("priority", "").isdigit():
            candidate = (int(fields["priority"]), fields.get("driver", "?"))
            best = max(best, candidate) if best else candidate
    return best[1] if best else None


def _entries(compiled: CompiledRoutes, choice: TierChoice
             ) -> tuple[list[int], dict[tuple[int, bytes], bytes]]:
    """The configs' words of a table, and the servers the tier may forward to."""
    decoded = set(choice.in_kernel)
    confs = []
    for config_id in range(CID_CONFIGS):
        config = next((c for c in compiled.configs if c.config_id == config_id), None)
        if config is None or config_id not in decoded:
            confs += [CID_UNSET, 0, 0, 0]
        else:
            confs += [CID_MODES[config.mode], config.server_id_len, config.cid_len, 0]
    servers = {}
    for (config_id, server_id), index in compiled.servers.items():
        backend = compiled.backends[index]
        if config_id not in decoded or not backend.routable:
            continue
        assert backend.mac is not None
        slot = compiled.table.backend(index)[3]
        servers[config_id, server_id] = _SERVER.pack(
            config_id, server_id.ljust(SERVER_ID_MAX, b"\0"), backend.mac,
            slot if slot < BACKEND_SLOTS else NO_SLOT)
    return confs, servers


@dataclass
class Written:
    """What the daemon knows it wrote, per generation: the servers' slots, and a digest
    of each config's key (never the key) in the keys' map. Unknown after a restart."""
    slots: list[dict[int, bytes]] = field(default_factory=lambda: [{}, {}])
    keys: list[dict[int, str]] = field(default_factory=lambda: [{}, {}])


def _install_keys(steering: Steering, compiled: CompiledRoutes, choice: TierChoice,
                  generation: int, known: dict[int, str]) -> None:
    """A context for each config the tier decrypts, in the generation being written; the
    other slots of that generation emptied (no key stays in the kernel longer than its
    config)."""
    decrypted = {c.config_id: c.key for c in compiled.configs
                 if c.key is not None and c.config_id in choice.in_kernel}
    for config_id in range(CID_CONFIGS):
        key = decrypted.get(config_id)
        tag = hashlib.sha256(b"pesigitg tier key\0" + key).hexdigest() if key else ""
        if known.get(config_id) != tag:
            steering.set_tier_key(generation * CID_CONFIGS + config_id, key)
            known[config_id] = tag


def install(steering: Steering, compiled: CompiledRoutes, choice: TierChoice,
            written: Written | None = None) -> int:
    """Write ``compiled`` (as ``choice`` says) into the generation the program does not
    read, then switch to it; the generation now read. ``written`` remembers what is in
    the maps (what matches is not written again); None: unknown, everything is
    written."""
    tables, servers = steering.map(MAPS["TIER"]), steering.map(MAPS["TIER_SERVERS"])
    if (tables.value_size, servers.value_size) != (_TABLE.size, _SERVER.size):
        raise ValueError(f"{steering.object_path}: the kernel tier's maps do not have the "
                         "layout of this pesigitg_abi.h")
    generation = 1 - steering.tier_generation()
    confs, wanted = _entries(compiled, choice)
    placed = place(wanted)
    if placed is None:
        log.warning("the kernel tier cannot hold these %d servers (at most %d): the workers "
                    "decide all their frames", len(wanted),
                    (BUCKET_SLOTS << BUCKET_BITS_MAX) // 16)
        placed, confs = (0, BUCKET_BITS_MIN, []), [CID_UNSET] * 4 * CID_CONFIGS
    seed, bits, slots = placed
    on = bool(choice.in_kernel) and bool(slots)     # a config to decode, servers placed
    written = written or Written()
    if steering.crypto:
        _install_keys(steering, compiled, choice if on else choose("off", {}), generation,
                      written.keys[generation])
    known = written.slots[generation]
    base = generation * (servers.max_entries // 2)
    for i, entry in enumerate(slots):
        if known.get(base + i) != entry:
            servers.update(struct.pack("<I", base + i), entry)
            known[base + i] = entry
    tables.update(struct.pack("<I", generation),
                  _TABLE.pack(int(on), bits, compiled.if_mac, seed, *confs))
    steering.set_tier_generation(generation)
    return generation


def tier_counts(steering: Steering, configs: Iterable[int], slots: Iterable[int]
                ) -> tuple[dict[int, int], list[int]]:
    """Frames the kernel tier forwarded, summed over CPUs: per backend slot (of
    ``slots``) and per config id (of ``configs``; the others read 0). Two batched
    reads per config: its slots up to the highest asked for, and the count of
    backends without a slot."""
    counts = steering.map(MAPS["TIER_COUNTS"])
    slots = [s for s in slots if 0 <= s < BACKEND_SLOTS]
    per_slot = dict.fromkeys(slots, 0)
    per_config = [0] * CID_CONFIGS
    for config_id in configs:
        first = config_id * COUNT_STRIDE
        by_slot = counts.sums_per_cpu(first, max(slots) + 1 if slots else 0)
        per_config[config_id] += counts.sums_per_cpu(first + BACKEND_SLOTS, 1)[0]
        for slot in per_slot:
            per_config[config_id] += by_slot[slot]
            per_slot[slot] += by_slot[slot]
    return per_slot, per_config


def clear_slots(steering: Steering, slots: Iterable[int]) -> None:
    """Zero the tier's count of slots another backend held before (as the workers')."""
    counts = steering.map(MAPS["TIER_COUNTS"])
    for slot in slots:
        if 0 <= slot < BACKEND_SLOTS:
            for config_id in range(CID_CONFIGS):
                counts.update(struct.pack("<I", config_id * COUNT_STRIDE + slot), bytes(8))
