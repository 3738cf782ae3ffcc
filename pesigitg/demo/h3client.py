"""An HTTP/3 client that can move: new source port, new address, new connection ID.

Sockets are made by the caller (inside the client's namespace), so the client can
be handed a fresh socket mid-connection the way a NAT rebinding or a Wi-Fi to
cellular switch looks to the server.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent

__all__ = ["H3Client", "client_configuration", "connect"]


def client_configuration(server_name: str) -> QuicConfiguration:
    import ssl

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                               server_name=server_name)
    config.verify_mode = ssl.CERT_NONE      # the demo's certificate is self-signed
    return config


class _Forward(asyncio.DatagramProtocol):
    """Hands datagrams from a new socket to the connection."""

    def __init__(self, client: H3Client) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client.datagram_received(data, addr)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._responses: dict[int, dict[str, Any]] = {}
        self._sockets: list[asyncio.BaseTransport] = []

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self._http.handle_event(event):
            response = self._responses.get(getattr(http_event, "stream_id", -1))
            if response is None:
                continue
            if isinstance(http_event, HeadersReceived):
                response["headers"] = dict(http_event.headers)
            elif isinstance(http_event, DataReceived):
                response["body"] += http_event.data
            if getattr(http_event, "stream_ended", False):
                response["done"].set_result(None)

    async def get(self, authority: str, path: str = "/", timeout: float = 5.0
                  ) -> tuple[int, bytes]:
        stream_id = self._quic.get_next_available_stream_id()
        done = asyncio.get_running_loop().create_future()
        self._responses[stream_id] = {"headers": {}, "body": b"", "done": done}
        self._http.send_headers(stream_id, [
            (b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"user-agent", b"pesigitg-demo")], end_stream=True)
        self.transmit()
        try:
            await asyncio.wait_for(done, timeout)
        finally:
            response = self._responses.pop(stream_id)
        return int(response["headers"].get(b":status", b"0")), response["body"]

    @property
    def server_cid(self) -> bytes:
        """The destination CID this client puts on its packets now."""
        return self._quic._peer_cid.cid

    @property
    def local_address(self) -> tuple[str, int]:
        return self._transport.get_extra_info("sockname")[:2]   # type: ignore[union-attr]

    async def rebind(self, sock: socket.socket) -> None:
        """Send (and receive) from ``sock`` from now on: a new port or address."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Forward(self), sock=sock)
        assert self._transport is not None
        self._sockets.append(self._transport)
        self._transport = transport
        self._quic.send_ping(0)     # make the move visible to the server now
        self.transmit()

    def change_cid(self) -> None:
        """Switch to the next connection ID the server issued (NEW_CONNECTION_ID)."""
        self._quic.change_connection_id()
        self.transmit()

    def close_all(self) -> None:
        self.close()
        for transport in self._sockets:
            transport.close()


async def connect(sock: socket.socket, address: tuple[str, int] | tuple[str, int, int, int],
                  configuration: QuicConfiguration, timeout: float = 5.0) -> H3Client:
    """Handshake over ``sock`` (already bound, in the right namespace)."""
    loop = asyncio.get_running_loop()
    connection = QuicConnection(configuration=configuration)
    _, protocol = await loop.create_datagram_endpoint(lambda: H3Client(connection), sock=sock)
    protocol.connect(address)
    await asyncio.wait_for(protocol.wait_connected(), timeout)
    return protocol
