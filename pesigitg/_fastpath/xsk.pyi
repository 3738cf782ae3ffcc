DEFAULT_FRAME_SIZE: int
DEFAULT_RING_SIZE: int
DEFAULT_FRAME_COUNT: int

class XskSocket:
    fd: int
    umem_fd: int
    ifindex: int
    queue: int
    frame_size: int
    frame_count: int
    mode: str
    frames_free: int
    fill_pending: int
    def __init__(self, ifname: str, queue: int, *, frame_size: int = ..., frame_count: int = ...,
                 rx_size: int = ..., tx_size: int = ..., fill_size: int = ...,
                 comp_size: int = ..., zero_copy: bool | str = ...) -> None: ...
    def statistics(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> XskSocket: ...
    def __exit__(self, *exc: object) -> None: ...
