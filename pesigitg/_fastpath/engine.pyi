import mmap

from pesigitg._fastpath.table import RouteTable
from pesigitg._fastpath.xsk import XskSocket

DEFAULT_BATCH: int
DEFAULT_POLL_TIMEOUT_MS: int

def new_counters(workers: int = 1) -> mmap.mmap: ...
def read_counters(buffer: object, worker: int = 0) -> dict[str, int]: ...

class Engine:
    xsk: XskSocket
    batch: int
    poll_timeout_ms: int
    busy_poll: bool
    table: RouteTable
    def __init__(self, xsk: XskSocket, table: RouteTable, counters: object = None,
                 worker: int = 0, batch: int = ..., poll_timeout_ms: int = ...,
                 busy_poll: bool = False) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def swap_table(self, table: RouteTable) -> None: ...
    def stop(self) -> None: ...
    def run(self) -> None: ...
