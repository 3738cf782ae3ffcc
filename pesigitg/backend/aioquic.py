"""aioquic servers that issue QUIC-LB connection IDs (``pip install pesigitg[aioquic]``).

:func:`serve` is a drop-in for :func:`aioquic.asyncio.serve`: every connection ID
the server hands out (the source CID of its long headers and every
NEW_CONNECTION_ID) comes from a :class:`~pesigitg.routing.quiclb.CidEncoder` for the given
config and server ID, so pesigitgd routes the connection to this server whatever
the client's address. ``configuration.connection_id_length`` is set to the CID
length of the config.

How: aioquic passes each new server-side ``QuicConnection`` to ``create_protocol``
before it registers the connection's CIDs; we swap the first CID there and give
the connection our own ``_replenish_connection_ids``. Another QUIC stack does the
same at its equivalent hook: generate every server CID with ``CidEncoder.new_cid()``
(the same config id, lengths, key and server ID as in pesigitgd's lb.toml) and
use the config's CID length for short-header parsing.

With ``retry=RetryKeys(...)`` (``RetryKeys.from_lb_toml(path)`` reads lb.toml's
``[retry]``), the server takes the tokens of pesigitgd's Retry offload
(draft-ietf-quic-retry-offload, shared-state mode): an Initial with a valid Retry
token starts a connection whose ``original_destination_connection_id`` is the
token's and whose ``retry_source_connection_id`` is the Initial's destination CID
(QuicConnection's own constructor arguments), so the client's checks of both
transport parameters pass; an Initial with an invalid token is dropped. The server
never sends a Retry of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
import types
from collections.abc import Callable
from functools import partial
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection, QuicConnectionId
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from pesigitg.routing.quiclb import CidConfig, CidEncoder
from pesigitg.routing.retry import INTEGRITY, RETRY, RetryKeys, TokenState, open_token

__all__ = ["OffloadedRetryServer", "RetryKeys", "adopt_connection", "serve"]


def adopt_connection(connection: QuicConnection, encoder: CidEncoder) -> None:
    """Make a fresh server-side connection issue its CIDs from ``encoder``."""
    first = connection._host_cids[0]
    first.cid = encoder.new_cid()
    connection.host_cid = first.cid
    connection._local_initial_source_connection_id = first.cid

    def replenish(self: QuicConnection) -> None:
        # Same policy as aioquic (up to 8, within the peer's limit), our CIDs.
        while len(self._host_cids) < min(8, self._remote_active_connection_id_limit):
            self._host_cids.append(QuicConnectionId(
                cid=encoder.new_cid(), sequence_number=self._host_cid_seq,
                stateless_reset_token=os.urandom(16)))
            self._host_cid_seq += 1

    connection._replenish_connection_ids = types.MethodType(  # type: ignore[method-assign]
        replenish, connection)


class OffloadedRetryServer(QuicServer):
    """A QuicServer that takes the Retry offload's tokens (see the module's doc)."""

    def __init__(self, *, retry_keys: RetryKeys, **kwargs: Any) -> None:
        super().__init__(retry=False, **kwargs)
        self.retry_keys = retry_keys
        self.tokens = {"valid": 0, "invalid": 0, "expired": 0}

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        assert isinstance(data, bytes)
        try:
            header = pull_quic_header(Buffer(data=data),
                                      host_cid_length=self._configuration.connection_id_length)
        except ValueError:
            return
        if (header.packet_type == QuicPacketType.INITIAL and header.token
                and header.version in INTEGRITY
                and header.destination_cid not in self._protocols
                and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE):
            check = open_token(self.retry_keys, header.token, addr[0], addr[1],
                               header.destination_cid, time.time())
            self.tokens[check.state.value] += 1
            if check.state is not TokenState.VALID:
                return                  # dropped (the draft: servers validate every token)
            if check.kind == RETRY:
                assert check.odcid is not None
                self._start(data, addr, header.destination_cid, check.odcid,
                            header.destination_cid)
                return
        super().datagram_received(data, addr)

    def _start(self, data: bytes, addr: NetworkAddress, dcid: bytes, odcid: bytes,
               rscid: bytes) -> None:
        """A connection whose client came through a Retry: both transport parameters
        set through QuicConnection's constructor, registered as QuicServer registers
        its connections."""
        connection = QuicConnection(configuration=self._configuration,
                                    original_destination_connection_id=odcid,
                                    retry_source_connection_id=rscid,
                                    session_ticket_fetcher=self._session_ticket_fetcher,
                                    session_ticket_handler=self._session_ticket_handler)
        protocol = self._create_protocol(connection, stream_handler=self._stream_handler)
        protocol.connection_made(self._transport)
        protocol._connection_id_issued_handler = partial(self._connection_id_issued,
                                                         protocol=protocol)
        protocol._connection_id_retired_handler = partial(self._connection_id_retired,
                                                          protocol=protocol)
        protocol._connection_terminated_handler = partial(self._connection_terminated,
                                                          protocol=protocol)
        self._protocols[dcid] = protocol
        self._protocols[connection.host_cid] = protocol
        protocol.datagram_received(data, addr)


async def serve(host: str, port: int, *, configuration: QuicConfiguration,
                cid_config: CidConfig, server_id: bytes,
                create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
                retry: RetryKeys | bool | None = None, cid_encoder: CidEncoder | None = None,
                **kwargs: Any) -> QuicServer:
    """Like :func:`aioquic.asyncio.serve`, issuing CIDs for ``cid_config``/``server_id``.

    Behind Direct Server Return, serve on the VIP (so replies leave from it) and, for
    pesigitgd's health probes, on the backend's own address too; pass both calls the
    same ``cid_encoder`` so they never issue the same nonce twice. ``retry``: the
    shared token keys of pesigitgd's Retry offload, to accept its tokens.
    """
    if retry is True:
        raise ValueError("retry=True is not supported behind pesigitg: aioquic picks the "
                         "Retry source CID at random, so the client's retried Initial "
                         "could reach another server, which cannot validate the token; "
                         "pass retry=RetryKeys.from_lb_toml(...) to take pesigitgd's "
                         "Retries instead")
    encoder = cid_encoder or CidEncoder(cid_config, server_id)  # checks the server ID
    if encoder.config is not cid_config and (encoder.config is None or
                                            encoder.config.config_id != cid_config.config_id):
        raise ValueError("cid_encoder was made for another QUIC-LB config")
    configuration.connection_id_length = encoder.cid_len

    def make_protocol(connection: QuicConnection, *args: Any, **kw: Any
                      ) -> QuicConnectionProtocol:
        adopt_connection(connection, encoder)
        return create_protocol(connection, *args, **kw)

    keys = retry if isinstance(retry, RetryKeys) else None

    def make_server() -> QuicServer:
        if keys is None:
            return QuicServer(configuration=configuration, create_protocol=make_protocol,
                              **kwargs)
        return OffloadedRetryServer(retry_keys=keys, configuration=configuration,
                                    create_protocol=make_protocol, **kwargs)

    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(make_server, local_addr=(host, port))
    return server
