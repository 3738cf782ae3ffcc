"""An HTTP/3 backend that names itself: ``python -m pesigitg.demo.h3server``.

Every response body is ``backend NAME\\n``, so a client can tell which backend served
each request. CIDs come from :func:`pesigitg.backend.aioquic.serve`; with Direct
Server Return it serves on the VIP and on its own address (health probes).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

from pesigitg.backend.aioquic import RetryKeys, serve
from pesigitg.routing.quiclb import CidConfig, CidEncoder

__all__ = ["NamedBackend", "main"]


class NamedBackend(QuicConnectionProtocol):
    name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = H3Connection(self._quic)
        if self._http is None:
            return
        for http_event in self._http.handle_event(event):
            if isinstance(http_event, HeadersReceived) and http_event.stream_ended:
                body = f"backend {self.name}\n".encode()
                self._http.send_headers(http_event.stream_id, [
                    (b":status", b"200"), (b"server", f"pesigitg-demo/{self.name}".encode()),
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode())])
                self._http.send_data(http_event.stream_id, body, end_stream=True)
        self.transmit()


async def run(args: argparse.Namespace) -> None:
    config = CidConfig(args.config_id, args.server_id_length, args.nonce_length,
                       bytes.fromhex(args.key) if args.key else None, encode_length=True)
    quic = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    quic.load_cert_chain(args.cert, args.private_key)
    protocol = type("Backend", (NamedBackend,), {"name": args.name})
    server_id = bytes.fromhex(args.server_id)
    encoder = CidEncoder(config, server_id)
    retry = RetryKeys.from_lb_toml(args.retry_keys) if args.retry_keys else None
    servers = [await serve(host, args.port, configuration=quic, cid_config=config,
                           server_id=server_id, create_protocol=protocol, cid_encoder=encoder,
                           retry=retry)
               for host in args.host or ["0.0.0.0"]]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hosts = ", ".join(f"{h}:{args.port}" for h in args.host or ["0.0.0.0"])
    print(f"backend {args.name} listening on {hosts}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--host", action="append",
                   help="address to serve on (repeatable): the VIP, so replies leave from "
                        "it (DSR), and the backend's own address for health probes")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--cert", required=True)
    p.add_argument("--private-key", required=True)
    p.add_argument("--config-id", type=int, required=True)
    p.add_argument("--server-id-length", type=int, required=True)
    p.add_argument("--nonce-length", type=int, required=True)
    p.add_argument("--key", help="QUIC-LB key, hex")
    p.add_argument("--server-id", required=True, help="hex")
    p.add_argument("--retry-keys", metavar="LB_TOML",
                   help="take pesigitgd's Retry tokens, with the keys of this lb.toml's "
                        "[retry]")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
