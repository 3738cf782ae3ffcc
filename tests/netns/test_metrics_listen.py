"""metrics_listen: Prometheus scrapes pesigitgd over plain HTTP on TCP, IPv4 and IPv6;
read only, bounded, kept across reloads and hitless restarts, and a taken port is a
clear error (pesigitgd(8), METRICS LISTENER)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pesigitg.ctl.client import DaemonError, ask
from pesigitg.daemon.metrics_listen import MAX_CONNECTIONS
from pesigitg.testing.daemon import RunningDaemon
from pesigitg.testing.netns import inside
from tests.netns.lbtoml import lb_toml
from tests.netns.test_daemon import KEY_HEX, STATIC

V4, V6 = "127.0.0.1:9464", "[::1]:9464"


def raw(lab: Any, address: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` to ``address`` in the balancer's namespace; all it answers."""
    host, _, port = address.rpartition(":")
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with inside(lab.lb_ns):
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((host.strip("[]"), int(port)))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def http(lab: Any, address: str, request: bytes) -> tuple[int, dict[str, str], str]:
    """One HTTP request: status, headers, body."""
    head, _, body = raw(lab, address, request).decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(lab: Any, address: str, path: str) -> tuple[int, dict[str, str], str]:
    return http(lab, address, f"GET {path} HTTP/1.1\r\nHost: lb\r\n"
                              "Accept: text/plain\r\n\r\n".encode())


def refused(lab: Any, address: str) -> bool:
    try:
        get(lab, address, "/metrics")
    except ConnectionRefusedError:
        return True
    return False


def make(lab: Any, daemons: list[RunningDaemon], *listen: str) -> RunningDaemon:
    daemon = RunningDaemon(lab.lb_ns, lab.workdir,
                           extra_conf="".join(f"metrics_listen = {a}\n" for a in listen))
    daemon.routes.write_text(lb_toml(STATIC))
    daemons.append(daemon)
    return daemon


def listening(lab: Any, address: str) -> socket.socket:
    """Someone else holding ``address`` (a port that is taken)."""
    host, _, port = address.rpartition(":")
    with inside(lab.lb_ns):
        sock = socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen()
    return sock


def set_listeners(daemon: RunningDaemon, *listen: str) -> None:
    kept = [line for line in daemon.conf.read_text().splitlines()
            if not line.startswith("metrics_listen")]
    daemon.conf.write_text("\n".join(kept + [f"metrics_listen = {a}" for a in listen]) + "\n")


@pytest.mark.parametrize("address", [V4, V6], ids=["ipv4", "ipv6"])
def test_metrics_and_health_over_http_and_nothing_else(lab, daemons, address):
    daemon = make(lab, daemons, address).start()
    status, headers, body = get(lab, address, "/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4"
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["pesigitg_up"].samples[0].value == 1
    assert {s.labels["backend"] for s in families["pesigitg_backend_up"].samples} == \
        {"10.9.0.11", "10.9.0.12"}
    assert KEY_HEX not in body.lower()
    status, headers, body = get(lab, address, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] in ("ok", "degraded")
    assert health["fingerprint"] == daemon.get("/health")["fingerprint"]
    assert KEY_HEX not in body.lower()
    # Read only: what writes, or shows more, is not there.
    for path in ("/config", "/stats", "/", "/whoami?cid=00"):
        assert get(lab, address, path)[0] == 404
    for path in ("/reload", "/stop", "/drain?address=10.9.0.11"):
        status, _, _ = http(lab, address, f"POST {path} HTTP/1.1\r\n\r\n".encode())
        assert status in (404, 405)
    status, _, _ = http(lab, address, b"POST /metrics HTTP/1.1\r\n\r\n")
    assert status == 405
    # Not HTTP: refused, not served (the status socket's bare "GET /path" is not for TCP).
    assert raw(lab, address, b"GET /metrics\n").startswith(b"HTTP/1.0 400 ")
    assert daemon.get("/health")["status"] in ("ok", "degraded")   # nothing changed
    assert daemon.get("/config")["daemon"]["metrics_listen"] == [address]


def test_connections_are_capped_and_a_silent_one_is_cut_off(lab, daemons):
    make(lab, daemons, V4).start()
    idle = []
    with inside(lab.lb_ns):
        for _ in range(MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", 9464), timeout=15)
            idle.append(sock)
        try:
            time.sleep(0.2)             # accepted (no timing asserted: only an order)
            status, _, body = get(lab, V4, "/metrics")
            assert status == 503 and "connections are open already" in body
            idle[0].sendall(b"GET /metr")       # half a request, then nothing
            answer = idle[0].recv(4096)         # the request's deadline answers
            assert b" 408 " in answer.split(b"\r\n")[0]
        finally:
            for sock in idle:
                sock.close()
    assert get(lab, V4, "/metrics")[0] == 200


@pytest.mark.parametrize("address", [V4, V6], ids=["ipv4", "ipv6"])
def test_a_taken_port_stops_the_start_and_says_which(lab, daemons, address):
    holder = listening(lab, address)
    try:
        daemon = make(lab, daemons, address).start(wait=False)
        line = daemon.wait_log("cannot start", timeout=20)
        assert f"metrics_listen {address}: cannot listen: Address already in use" in line
        assert daemon.proc is not None and daemon.proc.wait(15) == 1
    finally:
        holder.close()


def test_reload_adds_and_removes_listeners_and_a_taken_port_changes_nothing(lab, daemons):
    daemon = make(lab, daemons, V4).start()
    other = "127.0.0.1:9465"
    holder = listening(lab, other)
    try:
        set_listeners(daemon, V4, V6, other)
        answer = _reload(daemon)
        assert f"metrics_listen {other}: cannot listen: Address already in use" in answer
        assert get(lab, V4, "/metrics")[0] == 200
        assert refused(lab, V6), "a failed reload left a listener it bound"
        health = json.loads(get(lab, V4, "/health")[2])
        assert health["last_reload"]["ok"] is False
        assert "Address already in use" in health["last_reload"]["error"]
        assert "pesigitg_last_reload_success 0" in get(lab, V4, "/metrics")[2]
    finally:
        holder.close()
    set_listeners(daemon, V6, other)
    assert _reload(daemon) == "reloaded"
    assert get(lab, V6, "/metrics")[0] == 200 and get(lab, other, "/metrics")[0] == 200
    assert refused(lab, V4)
    metrics = get(lab, V6, "/metrics")[2]
    assert "pesigitg_last_reload_success 1" in metrics
    assert 'pesigitg_reloads_total{result="failed"} 1' in metrics
    assert 'pesigitg_reloads_total{result="ok"} 1' in metrics


def _reload(daemon: RunningDaemon) -> str:
    """POST /reload: "reloaded", or the daemon's reason."""
    try:
        ask(daemon.status_socket, "/reload", method="POST", timeout=15)
    except DaemonError as exc:
        return str(exc)
    return "reloaded"


def test_a_hitless_restart_hands_the_listeners_over_and_no_scrape_fails(lab, daemons):
    daemon = make(lab, daemons, V4, V6).start()
    first = daemon.pid
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            for address in (V4, V6):
                try:
                    status, _, body = get(lab, address, "/metrics")
                    if status != 200 or "pesigitg_up 1" not in body:
                        failures.append(f"{address}: {status}")
                    answered[0] += 1
                except OSError as exc:
                    failures.append(f"{address}: {exc}")

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        answer = ask(daemon.status_socket, "/restart", method="POST", timeout=60)
        assert answer["restarted"] and answer["pid"] != first
        daemon.wait_until(lambda: daemon.pid == answer["pid"], 15, "the new pidfile")
        seen = answered[0]
        daemon.wait_until(lambda: answered[0] > seen + 4, 15, "scrapes of the new daemon")
    finally:
        stop.set()
        scraper.join()
    assert failures == []
    assert json.loads(get(lab, V6, "/health")[2])["uptime_s"] > 0
