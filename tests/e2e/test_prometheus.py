"""Real Prometheus (Debian's) scraping a real pesigitgd under HTTP/3 traffic, over its
IPv4 and IPv6 metrics listeners, with contrib/prometheus's configuration and alert
rules: counters move, every dashboard query returns data, every alert expression
evaluates, a stopped backend fires PesigitgBackendDown, and a second balancer with
another configuration fires PesigitgFingerprintMismatch."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pesigitg.demo.scenario import Demo, demo_environment
from pesigitg.demo.topology import Host
from pesigitg.testing.daemon import RunningDaemon
from tests.e2e.prometheus_server import Prometheus
from tests.unit.test_prometheus_contrib import RULES, dashboard_queries

PORT = 9464
LB2 = 3                 # the second balancer's host number (the first is 2)

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus (Debian package) is missing: make test "
                                       "installs it")


def target(address: str) -> str:
    return f"[{address}]:{PORT}" if ":" in address else f"{address}:{PORT}"


class Lab:
    def __init__(self, demo: Demo, prometheus: Prometheus, workdir: Path) -> None:
        self.demo, self.prometheus, self.workdir = demo, prometheus, workdir
        self.second: RunningDaemon | None = None


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    listen = [target("10.77.0.2"), target("fd00:77::2")]
    conf = "".join(f"metrics_listen = {t}\n" for t in listen)
    with demo_environment(say=lambda _: None, family="dual", daemon_conf=conf) as demo, \
            tempfile.TemporaryDirectory(prefix="pesigitg-prom-") as tmp:
        targets = [*listen, target(f"10.77.0.{LB2}")]
        prometheus = Prometheus(demo.net.client.ns, Path(tmp) / "prometheus", targets)
        lab = Lab(demo, prometheus, Path(tmp))
        try:
            yield lab
        finally:
            prometheus.stop()
            if lab.second is not None:
                lab.second.stop()


LISTENERS = {"10.77.0.2:9464", "[fd00:77::2]:9464"}


def forwarded(p: Prometheus) -> dict[str, float]:
    """The daemon's forwarded frames, as each of its listeners was last scraped."""
    return {r["metric"]["instance"]: float(r["value"][1]) for r in
            p.query("sum by (instance) (pesigitg_forwarded_frames_total)")}


def test_prometheus_scrapes_both_listeners_and_sees_counters_move(lab):
    p = lab.prometheus
    up = p.wait_for("both listeners scraped", lambda: (
        found if len(found := p.query('up{job="pesigitg"} == 1')) == 2 else None))
    assert {r["metric"]["instance"] for r in up} == LISTENERS
    before = forwarded(p)
    served = asyncio.run(lab.demo.new_connections(6, requests=2))
    assert sum(served.values()) == 6
    after = p.wait_for("the forwarded counter to move on both", lambda: (
        now if set(now := forwarded(p)) == LISTENERS and
        all(now[i] > before.get(i, 0) for i in LISTENERS) else None))
    assert after.keys() == LISTENERS


def test_the_real_exposition_passes_promtool(lab):
    text = lab.demo.daemon.get("/metrics")
    result = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                            capture_output=True, check=False)
    assert result.returncode == 0 and not result.stdout + result.stderr, \
        result.stdout + result.stderr


def test_every_dashboard_query_returns_data_and_every_alert_evaluates(lab):
    p = lab.prometheus
    assert "reloaded: " in lab.demo.reload()        # the last-reload panel has data
    queries = dashboard_queries()

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries if not p.query(expr)]
    p.wait_for("every panel query to return data", lambda: not empty() or None)
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        p.query(rule["expr"])           # an expression Prometheus refuses raises here
    assert p.firing("PesigitgReloadFailed") == []
    assert p.firing("PesigitgFingerprintMismatch") == []


def test_a_stopped_backend_fires_backend_down(lab):
    p = lab.prometheus
    victim, _ = asyncio.run(lab.demo.failure())
    address = lab.demo.host(victim).address
    def down() -> list[dict[str, str]] | None:
        found = [a for a in p.firing("PesigitgBackendDown") if a["backend"] == address]
        return found if {a["instance"] for a in found} == LISTENERS else None
    firing = p.wait_for("PesigitgBackendDown for the stopped backend, from both listeners",
                        down)
    assert all(a["severity"] == "warning" for a in firing)
    others = {a["backend"] for a in p.firing("PesigitgBackendDown")}
    assert others == {address}
    assert p.firing("PesigitgNoBackendUp") == []


def test_balancers_with_different_configurations_fire_the_fingerprint_alert(lab):
    p, demo = lab.prometheus, lab.demo
    host = Host("lb2", f"{demo.net.tag}-lb2", "l1", LB2, demo.net.families, 4)
    demo.net.plug(host)
    workdir = lab.workdir / "lb2"
    workdir.mkdir()
    second = RunningDaemon(host.ns, workdir, interface=host.dev,
                           extra_conf=f"metrics_listen = {target(host.address)}\n")
    # The same backends and VIPs, another Maglev table size: it would route fallback
    # packets elsewhere.
    second.routes.write_text(demo.routes_text() + "\n[fallback]\ntable_size = 5003\n")
    lab.second = second.start()
    ours = demo.daemon.get("/health")["fingerprint"]
    theirs = second.get("/health")["fingerprint"]
    assert ours != theirs
    firing = p.wait_for("PesigitgFingerprintMismatch for both VIPs", lambda: (
        found if len(found := p.firing("PesigitgFingerprintMismatch")) == 2 else None))
    assert {a["vip"] for a in firing} == set(demo.net.vips.values())
    seen = {r["metric"]["fingerprint"]
            for r in p.query("pesigitg_routing_fingerprint_info")}
    assert seen == {ours, theirs}
