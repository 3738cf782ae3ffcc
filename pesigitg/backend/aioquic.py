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
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import serve as aioquic_serve
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionId

from pesigitg.routing.quiclb import CidConfig, CidEncoder

__all__ = ["adopt_connection", "serve"]


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


async def serve(host: str, port: int, *, configuration: QuicConfiguration,
                cid_config: CidConfig, server_id: bytes,
                create_protocol: Callable[..., QuicConnectionProtocol] = QuicConnectionProtocol,
                retry: bool = False, cid_encoder: CidEncoder | None = None,
                **kwargs: Any) -> QuicServer:
    """Like :func:`aioquic.asyncio.serve`, issuing CIDs for ``cid_config``/``server_id``.

    Behind Direct Server Return, serve on the VIP (so replies leave from it) and, for
    pesigitgd's health probes, on the backend's own address too; pass both calls the
    same ``cid_encoder`` so they never issue the same nonce twice.
    """
    if retry:
        raise ValueError("retry=True is not supported behind pesigitg: aioquic picks the "
                         "Retry source CID at random, so the client's retried Initial "
                         "could reach another server, which cannot validate the token")
    encoder = cid_encoder or CidEncoder(cid_config, server_id)  # checks the server ID
    if encoder.config is not cid_config and (encoder.config is None or
                                            encoder.config.config_id != cid_config.config_id):
        raise ValueError("cid_encoder was made for another QUIC-LB config")
    configuration.connection_id_length = encoder.cid_len

    def make_protocol(connection: QuicConnection, *args: Any, **kw: Any
                      ) -> QuicConnectionProtocol:
        adopt_connection(connection, encoder)
        return create_protocol(connection, *args, **kw)

    return await aioquic_serve(host, port, configuration=configuration,
                               create_protocol=make_protocol, **kwargs)
