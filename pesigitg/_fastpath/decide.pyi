from pesigitg._fastpath.table import RouteTable

COUNTER_NAMES: tuple[str, ...]
COUNTER_COUNT: int
COUNTERS_SIZE: int
ROUTES: tuple[str, ...]
UNROUTABLE: tuple[str, ...]
DROPS: tuple[str, ...]

def decide_frame(table: RouteTable, frame: bytes
                 ) -> tuple[str, int | None, int | None, str, str, bytes | None]: ...
