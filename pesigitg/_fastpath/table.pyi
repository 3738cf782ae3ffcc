from collections.abc import Mapping, Sequence

from pesigitg.quiclb import CidConfig

ROUTE_HEADER_SIZE: int
BACKEND_SIZE: int
SID_ENTRY_SIZE: int
BACKEND_NONE: int
MAX_BACKENDS: int
FLAG_MAC_SWAP_ONLY: int
STATE_UP: int
STATE_DRAINING: int
STATE_MAC_KNOWN: int

def maglev_fill(offsets: Sequence[int], skips: Sequence[int], size: int) -> bytes: ...
def pack_route_table(if_mac: bytes, configs: Sequence[CidConfig],
                     backends: Sequence[tuple[bytes | None, int]],
                     servers: Mapping[int, Sequence[tuple[bytes, int]]], maglev: bytes,
                     flags: int = 0) -> bytes: ...

class RouteTable:
    blob: bytes
    n_backends: int
    maglev_size: int
    if_mac: bytes
    def __init__(self, blob: bytes) -> None: ...
    def __len__(self) -> int: ...
    def backend(self, index: int) -> tuple[bytes, int]: ...
    def maglev(self) -> list[int]: ...
