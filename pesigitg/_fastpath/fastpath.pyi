# Types of the compiled packet path (pesigitg/_fastpath/fastpath.pyx and its parts).
import mmap
from collections.abc import Iterable, Sequence
from typing import Any

from pesigitg.routing.quiclb import CidConfig

# abi.pxi: derived from bpf/include/pesigitg_abi.h
XDP_VERDICTS: tuple[tuple[str, str], ...]
ROUTES: tuple[str, ...]
UNROUTABLE: tuple[str, ...]
UNROUTABLE_REASONS: tuple[tuple[str, str], ...]
DROPS: tuple[str, ...]
DROP_REASONS: tuple[tuple[str, str], ...]
PARSE_OUTCOMES: tuple[tuple[str, str, str, str], ...]
LIMITS: dict[str, int]
MAPS: dict[str, str]
SETTINGS_VAR: str
COUNTER_FAMILIES: tuple[tuple[str, str | None, tuple[str, ...], str, str], ...]
COUNTER_NAMES: tuple[str, ...]
GAUGES: frozenset[str]
COUNTERS_SIZE: int
BACKEND_COUNTS_SIZE: int
# the limits (LIMITS, one module attribute each)
XSK_SLOTS: int
MAX_PORTS: int
MAX_VIPS: int
IPV6_EXT_MAX: int
CID_CONFIGS: int
CID_MAX_LEN: int
SERVER_ID_MIN: int
SERVER_ID_MAX: int
NONCE_MIN: int
NONCE_MAX: int
PLAINTEXT_MAX: int
SHORT_HEADER_MIN: int
MAX_BACKENDS: int
BACKEND_SLOTS: int
MAGLEV_MAX: int
FLOW_ENTRIES_MAX: int
RETRY_KEYS: int
INITIAL_MIN: int
CNT_RETRY_SENT: str
CID_MODES: dict[str, int]
CID_UNSET: int
CNT_FORWARDED: str
CNT_CID_ROUTED: tuple[str, ...]
PTB_COPY_MAX: int
RETRY_ADMITTED: int
ODCID_MIN: int
TIER_SERVERS: int

# cid.pxi
CID_CONFIG_SIZE: int
NO_CONFIG: int
TOO_SHORT: int

AES_PATHS: tuple[str, ...]
AES_PATH_ENV: str

def aesni_supported() -> bool: ...
def aes_paths_available() -> tuple[str, ...]: ...
def aes_path() -> str: ...
def set_aes_path(name: str | None = None) -> None: ...
def aes128_expand(key: bytes) -> bytes: ...
def aes128_encrypt_block(key: bytes, block: bytes) -> bytes: ...
def aes128_decrypt_block(key: bytes, block: bytes) -> bytes: ...
def pack_cid_table(configs: Iterable[CidConfig]) -> bytes: ...

class CidDecoder:
    def __init__(self, configs: Iterable[CidConfig]) -> None: ...
    def decode(self, cid: bytes) -> tuple[int, bytes] | None: ...
    # Any objects with the buffer protocol (memoryview, bytearray, numpy arrays).
    def decode_batch(self, cids: Any, config_ids: Any, server_ids: Any) -> int: ...

# table.pxi
ROUTE_HEADER_SIZE: int
BACKEND_SIZE: int
SID_ENTRY_SIZE: int
BACKEND_NONE: int
STATE_UP: int
STATE_DRAINING: int
STATE_MAC_KNOWN: int

def maglev_fill(offsets: Sequence[int], skips: Sequence[int], size: int) -> bytes: ...
def pack_route_table(spec: object) -> bytes: ...  # a pesigitg.routing.routes.TableSpec
RETRY_MODES: tuple[str, ...]
TABLE_KNOBS: tuple[str, ...]

class RouteTable:
    blob: bytes
    n_backends: int
    maglev_size: int
    if_mac: bytes
    def __init__(self, blob: bytes) -> None: ...
    def knob(self, name: str) -> int: ...
    def digest(self) -> str: ...
    def __len__(self) -> int: ...
    def backend(self, index: int) -> tuple[bytes, int, int, int]: ...
    def backend_by_key(self, key: int) -> int | None: ...
    def vip(self, address: str) -> bool: ...
    def maglev(self) -> list[int]: ...

# decide.pxi
def decide_frame(table: RouteTable, frame: bytes
                 ) -> tuple[str, int | None, int | None, str, str, bytes | None]: ...
Decision = tuple[str, int | None, int | None, str, str, bytes | None]

def decide_frames_together(table: RouteTable, frames: Sequence[bytes],
                           flows: FlowTable | None = None) -> list[Decision]: ...
def parse_frame(frame: bytes) -> tuple[str, dict[str, Any]]: ...
def decide_batch(table: RouteTable, frames: memoryview, lengths: Sequence[int], stride: int,
                 repeat: int, *, flows: FlowTable | None = None, distinct: int = 0,
                 batch: int = ...) -> int: ...

# flows.pxi
FLOW_ENTRY_SIZE: int

class FlowTable:
    entries: int
    def __init__(self, entries: int) -> None: ...
    @staticmethod
    def rounded(entries: int) -> int: ...
    def learn(self, src: bytes, dst: bytes, sport: int, dport: int, key: int) -> bool: ...
    def recall(self, src: bytes, dst: bytes, sport: int, dport: int) -> int | None: ...

# retry.pxi
RETRY_ACTIONS: tuple[str, ...]
RETRY_PHASES: dict[str, int]

def gcm_supported() -> bool: ...
def gcm_seal(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> bytes: ...
def gcm_open(key: bytes, iv: bytes, aad: bytes, sealed: bytes) -> bytes | None: ...
def retry_packet(version: int, dcid: bytes, scid: bytes, odcid: bytes, token: bytes,
                 unused: int = 0) -> bytes: ...
def retry_screen(table: RouteTable, frame: bytes, phase: str = "active",
                 now: float | None = None, admitted: FlowTable | None = None
                 ) -> tuple[str, bytes | None, str, dict[str, int]]: ...

# xsk.pxi
DEFAULT_FRAME_SIZE: int
DEFAULT_RING_SIZE: int
DEFAULT_TX_SIZE: int
DEFAULT_FRAME_COUNT: int

GEOMETRY: tuple[str, ...]

def check_geometry(g: dict[str, int], umem_len: int) -> str | None: ...
def state_page_geometry(page: bytes) -> dict[str, int]: ...
def sanitize_state_page(page: bytes, frame_count: int,
                        rings: dict[str, tuple[int, int, int]]
                        ) -> tuple[int, bytes, dict[str, tuple[int, int, int]]]: ...

class XskSocket:
    fd: int
    umem_fd: int
    ifindex: int
    queue: int
    frame_size: int
    frame_count: int
    mode: str
    journal_seq: int
    repaired: int
    geometry: dict[str, int]
    def __init__(self, ifname: str, queue: int, *, frame_size: int = ..., frame_count: int = ...,
                 rx_size: int = ..., tx_size: int = ..., fill_size: int = ...,
                 comp_size: int = ..., zero_copy: bool | str = ...) -> None: ...
    @classmethod
    def adopt(cls, fd: int, umem_fd: int, geometry: dict[str, int] | None = None
              ) -> XskSocket: ...
    def recover(self) -> bool: ...
    def census(self, distinct: bool = False) -> dict[str, int]: ...
    def statistics(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> XskSocket: ...
    def __exit__(self, *exc: object) -> None: ...

# engine.pxi
DEFAULT_BATCH: int
DEFAULT_POLL_TIMEOUT_MS: int

def new_counters(workers: int = 1) -> mmap.mmap: ...
def counters_size(workers: int) -> int: ...
def read_counters(buffer: object, worker: int = 0) -> dict[str, int]: ...

class Engine:
    xsk: XskSocket
    batch: int
    poll_timeout_ms: int
    busy_poll: bool
    floor: bool
    recovered: bool
    table: RouteTable
    flow_entries: int
    def __init__(self, xsk: XskSocket, table: RouteTable, *, counters: object = None,
                 worker: int = 0, batch: int = ..., poll_timeout_ms: int = ...,
                 busy_poll: bool = False, floor: bool = False,
                 backend_counts: object = None) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def swap_table(self, table: RouteTable) -> None: ...
    def stop(self) -> None: ...
    def run(self) -> None: ...
