"""What /health says, from snapshots of the daemon (pesigitg.daemon.report), and the
status socket answering what it accepted when it stops serving. A BGP health check
withdraws a balancer on `down` or on no answer, so neither may happen by accident."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
from typing import Any

from pesigitg.daemon.report import BackendView, Report, Snapshot, WorkerView
from pesigitg.daemon.status import Endpoint, Request, Response, StatusServer


def snapshot(alive: list[bool], handing_over: bool = False) -> Snapshot:
    workers = [WorkerView(i, i, None, up, 100 + i if up else None, "copy", 0, {})
               for i, up in enumerate(alive)]
    backend = BackendView("10.0.0.2", bytes(6), "neighbour", True, "up (probed)", None,
                          False, True)
    return Snapshot("0", "eth1", 1.0, (443,), workers, True, "native", "link", {}, {},
                    {"configs": []}, [], [backend], handing_over=handing_over)


def health(s: Snapshot) -> dict[str, Any]:
    return Report(lambda: s).health()


def test_a_restart_handing_the_queues_over_is_degraded_not_down():
    answer = health(snapshot([False, False], handing_over=True))
    assert answer["status"] == "degraded"
    assert answer["reasons"] == [
        "a restart is handing the queues to the new daemon; frames wait in the rings"]


def test_without_a_restart_no_worker_is_down_and_a_missing_one_degraded():
    assert health(snapshot([False, False]))["status"] == "down"
    assert "no worker is running" in health(snapshot([False, False]))["reasons"]
    assert health(snapshot([True, False]))["reasons"] == ["1 of 2 workers are not running"]
    assert health(snapshot([True, True]))["status"] == "ok"
    # A failed hand-over restarts the workers: once they run, it is over.
    assert health(snapshot([True, True], handing_over=True))["status"] == "ok"


def test_a_handing_over_daemon_without_xdp_is_still_down():
    s = dataclasses.replace(snapshot([False], handing_over=True), xdp_attached=False)
    assert health(s)["status"] == "down"


def test_stopping_the_status_socket_answers_the_requests_it_accepted(tmp_path):
    """A request under way when the daemon stops serving and its event loop ends (a
    restart hands the socket over and the old daemon exits) gets its whole answer,
    not an empty one."""
    path = tmp_path / "status.sock"
    listening = threading.Event()

    async def slow(control: object, request: Request) -> Response:
        started.set()
        await asyncio.sleep(0.2)
        return Response({"status": "ok"})

    async def daemon() -> None:
        server = StatusServer(path, [Endpoint("GET", "/health", "", slow)])
        server.bind()
        await server.serve()
        listening.set()
        await started.wait()
        await server.close()        # then the loop ends, as the daemon's does

    started = asyncio.Event()
    serving = threading.Thread(target=asyncio.run, args=(daemon(),))
    serving.start()
    try:
        assert listening.wait(5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(path))
            client.sendall(b"GET /health\n")
            answer = b"".join(iter(lambda: client.recv(4096), b""))
    finally:
        serving.join(10)
    assert json.loads(answer) == {"status": "ok"}


def test_stopping_the_status_socket_cuts_a_client_that_never_finishes_its_request(tmp_path):
    """A stop or a restart is never held by a client: what is still open after the
    grace is aborted when the server closes."""
    path = tmp_path / "status.sock"
    listening, closed = threading.Event(), threading.Event()

    async def daemon() -> None:
        server = StatusServer(path, [])
        server.bind()
        await server.serve()
        listening.set()
        while server.open_connections == 0:     # until the connection is being served
            await asyncio.sleep(0.01)
        await server.close()
        closed.set()

    serving = threading.Thread(target=asyncio.run, args=(daemon(),))
    serving.start()
    try:
        assert listening.wait(5)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")     # and no more
            assert closed.wait(10)
            client.setblocking(False)
            try:
                assert client.recv(4096) == b"", "the server kept the connection open"
            except ConnectionResetError:
                pass                        # aborted: as good as closed
    finally:
        serving.join(10)
    assert not serving.is_alive()
