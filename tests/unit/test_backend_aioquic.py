"""aioquic behind pesigitg: every CID the server issues decodes to its server ID.

Runs on loopback, no privileges: a real aioquic client and server handshake.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from pesigitg.backend.aioquic import serve
from pesigitg.demo.certs import write_self_signed
from pesigitg.routing.quiclb import CidConfig, CidEncoder

KEY = bytes.fromhex("fdf726a9893ec05c0632d3956680baf0")


@pytest.mark.parametrize("config", [CidConfig(0, 3, 4, KEY, encode_length=True),
                                    CidConfig(5, 8, 8, KEY), CidConfig(1, 2, 6)],
                         ids=["four_pass", "single_pass", "plaintext"])
def test_every_cid_the_server_issues_names_it(tmp_path, config):
    server_id = bytes(range(1, config.server_id_len + 1))
    cert, key = write_self_signed(tmp_path, "localhost", ["127.0.0.1"])

    async def exchange() -> tuple[list[bytes], list[bytes]]:
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["test"])
        server_config.load_cert_chain(cert, key)
        protocols = []

        def track(*args, **kwargs):
            from aioquic.asyncio import QuicConnectionProtocol

            protocol = QuicConnectionProtocol(*args, **kwargs)
            protocols.append(protocol)
            return protocol

        server = await serve("127.0.0.1", 0, configuration=server_config, cid_config=config,
                             server_id=server_id, create_protocol=track)
        assert server._transport is not None
        port = server._transport.get_extra_info("sockname")[1]
        client_config = QuicConfiguration(is_client=True, alpn_protocols=["test"],
                                          verify_mode=ssl.CERT_NONE)
        try:
            async with connect("127.0.0.1", port, configuration=client_config) as client:
                await client.ping()
                await asyncio.sleep(0.1)     # let NEW_CONNECTION_ID frames arrive
                seen = [client._quic._peer_cid.cid] + [
                    c.cid for c in client._quic._peer_cid_available]
                issued = [c.cid for c in protocols[0]._quic._host_cids]
        finally:
            server.close()
        return seen, issued

    seen, issued = asyncio.run(exchange())
    assert len(seen) >= 2 and set(seen) <= set(issued)   # NEW_CONNECTION_ID arrived too
    assert {len(cid) for cid in issued} == {config.cid_len}
    for cid in issued:
        assert config.decode(cid)[0] == server_id
        assert cid[0] >> 5 == config.config_id


def test_retry_is_refused_with_the_reason():
    async def start() -> None:
        await serve("127.0.0.1", 0, configuration=QuicConfiguration(is_client=False),
                    cid_config=CidConfig(0, 3, 4), server_id=b"abc", retry=True)
    with pytest.raises(ValueError, match="retry=True is not supported behind pesigitg"):
        asyncio.run(start())


def test_a_shared_encoder_must_belong_to_the_config():
    async def start() -> None:
        await serve("127.0.0.1", 0, configuration=QuicConfiguration(is_client=False),
                    cid_config=CidConfig(0, 3, 4), server_id=b"abc",
                    cid_encoder=CidEncoder(CidConfig(1, 3, 4), b"abc"))
    with pytest.raises(ValueError, match="cid_encoder was made for another QUIC-LB config"):
        asyncio.run(start())
