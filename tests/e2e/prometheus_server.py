"""Debian's Prometheus, run in a test's namespace with contrib/prometheus's scrape
configuration and rules, and asked through its HTTP API.

The contrib files are used as they ship, with three changes a test needs: the targets
are the test's balancers, scrapes and rule evaluations happen every second, and each
alert's ``for`` is zero (so it fires at its first true evaluation instead of minutes
later). Expressions, labels and annotations are not touched.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from pesigitg.testing.netns import inside

__all__ = ["Prometheus"]

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
PORT = 9090             # on the namespace's loopback


class Prometheus:
    """``prometheus`` in namespace ``ns`` scraping ``targets`` (``ADDRESS:PORT``)."""

    def __init__(self, ns: str, workdir: Path, targets: list[str]) -> None:
        self.ns, self.workdir = ns, workdir
        config = yaml.safe_load((CONTRIB / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
        config["scrape_configs"][0]["scrape_timeout"] = "1s"
        rules = yaml.safe_load((CONTRIB / "pesigitg.rules.yml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = "0s"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "pesigitg.rules.yml").write_text(yaml.safe_dump(rules))
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "w")     # closed in stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "prometheus",
             f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{PORT}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """Stop the process this started, by its pid."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/PATH?params``: the answer's ``data`` (AssertionError with the
        error Prometheus gives)."""
        with inside(self.ns):
            sock = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        with sock:
            query = f"?{urlencode(params)}" if params else ""
            sock.sendall(f"GET /api/v1/{path}{query} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        body = json.loads(data.partition(b"\r\n\r\n")[2])
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (an error is an AssertionError)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def firing(self, alert: str) -> list[dict[str, str]]:
        """The labels of each firing instance of ``alert``."""
        return [a["labels"] for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == alert and a["state"] == "firing"]

    def wait_for(self, what: str, check: Any, timeout: float = 30.0) -> Any:
        """Poll ``check()`` until it returns something true; that value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}): "
                                     + (self.workdir / "prometheus.log").read_text()[-2000:])
            try:
                last = check()
            except (OSError, ValueError) as exc:    # not listening yet
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
