"""What pesigitgd exports for Prometheus, and what contrib/ ships around it: the
exposition passes `promtool check metrics`; the scrape configuration and the alert
rules pass promtool; every alert expression and every dashboard query parses and names
only metrics pesigitgd exports; the netplan example renders with netplan itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pesigitg._fastpath import COUNTER_NAMES
from pesigitg.daemon.exposition import exposition
from pesigitg.daemon.keyages import KeyAge
from pesigitg.daemon.report import BackendView, ReloadView, Snapshot, WorkerView

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
RULES = CONTRIB / "prometheus" / "pesigitg.rules.yml"
DASHBOARD = CONTRIB / "grafana" / "pesigitg.json"
KEY = "8f95f09245765f80256934e50c66207f"
# The alerts README's "Observing pesigitg" explains, one per question an on-call asks.
ALERTS = {"PesigitgScrapeFailed", "PesigitgWorkerDown", "PesigitgBackendDown",
          "PesigitgNoBackendUp", "PesigitgFallbackShareHigh", "PesigitgRetryOffloadActive",
          "PesigitgXdpDetached", "PesigitgReloadFailed", "PesigitgKeyTooOld",
          "PesigitgFingerprintMismatch"}
# What Prometheus itself provides (the scrape's own series) and PromQL's functions.
PROMETHEUS_OWN = {"up"}
# Grafana's variables, as the dashboard would expand them.
GRAFANA = {"$__rate_interval": "1m", "$instance": ".+", "${datasource}": "prometheus"}

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool (Debian package prometheus) is missing: "
                                       "make test installs it")


def full_snapshot() -> Snapshot:
    """A snapshot with something in every family: two workers, backends in every
    state, keys with and without a maximum age, a failed reload, two VIPs."""
    counters = {name: n for n, name in enumerate(COUNTER_NAMES)}
    workers = [WorkerView(i, i, i, True, 100 + i, "copy", i, counters) for i in range(2)]
    backends = [BackendView("10.0.0.2", bytes(6), "neighbour", True, "up (probed)", "ok",
                            False, True, forwarded=10, cid_routed=7, transitions=2),
                BackendView("fd00::3", None, "unresolved", False, "down (probed)", "timeout",
                            True, False, "override", 5.0, transitions=1)]
    keys = (KeyAge("QUIC-LB config 1", "quic-lb", 1, "ab" * 8, 100.5, 90),
            KeyAge("Retry key 3", "retry", 3, "cd" * 8, 1.25, None))
    return Snapshot("9.9.9", "eth1", 12.5, (443,), workers, True, "native", "link",
                    {"steered": 5, "passed": 2}, {}, {"vips": ["192.0.2.1", "2001:db8::1"],
                                                     "retry": {"mode": "load"}},
                    [], backends, keys=keys, fingerprint="0123456789abcdef",
                    reloads=ReloadView(3, 1, 1.7e9, False, "lb.toml: line 3: bad"))


def exported() -> dict[str, str]:
    """Every family pesigitgd can export: name -> type."""
    text = exposition(full_snapshot())
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label values and names stripped)."""
    bare = re.sub(r"\{[^}]*\}", "", re.sub(r'"[^"]*"', '""', expr))
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    return set(re.findall(r"\b(?:pesigitg_[a-z0-9_]+|up)\b(?!\s*\()", bare))


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True,
                          check=False)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, query with Grafana's variables expanded) for every target."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA.items():
                expr = expr.replace(variable, value)
            out.append((panel["title"], expr))
    return out


# -- the exposition -----------------------------------------------------------------------

def test_the_exposition_passes_promtool_check_metrics():
    result = promtool("check", "metrics", stdin=exposition(full_snapshot()))
    assert result.returncode == 0 and result.stdout + result.stderr == "", \
        result.stdout + result.stderr


def test_the_exposition_answers_the_on_calls_questions():
    text = exposition(full_snapshot())
    lines = set(text.splitlines())
    assert 'pesigitg_build_info{version="9.9.9",' in text
    assert 'pesigitg_backend_health_transitions_total{backend="10.0.0.2"} 2' in lines
    assert 'pesigitg_health_status{status="degraded"} 1' in lines
    assert 'pesigitg_xdp_attached{mode="native",attach="link"} 1' in lines
    assert 'pesigitg_retry_offload_info{mode="load"} 1' in lines
    assert 'pesigitg_reloads_total{result="ok"} 3' in lines
    assert 'pesigitg_reloads_total{result="failed"} 1' in lines
    assert "pesigitg_last_reload_success 0" in lines
    assert "pesigitg_last_reload_timestamp_seconds 1700000000" in lines
    assert 'pesigitg_key_age_seconds{kind="quic-lb",id="1"} 8683200' in lines
    assert 'pesigitg_key_max_age_seconds{kind="quic-lb",id="1"} 7776000' in lines
    assert not any(line.startswith('pesigitg_key_max_age_seconds{kind="retry"')
                   for line in lines)
    for vip in ("192.0.2.1", "2001:db8::1"):
        assert (f'pesigitg_routing_fingerprint_info{{vip="{vip}",'
                'fingerprint="0123456789abcdef"} 1') in lines
    # Keys only as ages: no fingerprint of a key, nor the key, anywhere.
    assert "abababab" not in text and KEY not in text


# -- contrib/prometheus ---------------------------------------------------------------------

def test_the_scrape_configuration_and_its_rules_pass_promtool(tmp_path):
    for name in ("prometheus.yml", "pesigitg.rules.yml"):
        shutil.copy(CONTRIB / "prometheus" / name, tmp_path / name)
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_alert_rules_pass_promtool_and_name_only_exported_metrics():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    names = set(exported()) | PROMETHEUS_OWN
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used and used <= names, f"{rule['alert']}: {sorted(used - names)}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_readme_explains_every_alert():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Observing pesigitg\n"):]
    section = section[:section.index("\n## ", 1)]
    for alert in ALERTS:
        assert f"`{alert}`" in section, alert


# -- contrib/grafana ------------------------------------------------------------------------

def test_every_dashboard_query_parses_and_names_only_exported_metrics(tmp_path):
    queries = dashboard_queries()
    names = set(exported())
    for title, expr in queries:
        used = metric_names(expr)
        assert used and used <= names, f"panel {title!r}: {sorted(used - names)}"
    # promtool parses each as a recording rule's expression.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_dashboard_covers_one_balancer_and_the_fleet():
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows[0] == "Balancer" and rows[-1] == "Fleet"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["instance"]["definition"] == "label_values(pesigitg_up, instance)"
    assert "pesigitg_up" in exported()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


# -- contrib/netplan ------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("netplan") is None, reason="netplan.io is missing: make "
                                                            "test installs it")
def test_the_netplan_example_renders_the_example_vips_on_the_loopback(tmp_path):
    vips = tomllib.loads((CONTRIB / "lb.toml").read_text())["vips"]
    (tmp_path / "etc" / "netplan").mkdir(parents=True)
    target = tmp_path / "etc" / "netplan" / "60-pesigitg-vip.yaml"
    shutil.copy(CONTRIB / "netplan" / "60-pesigitg-vip.yaml", target)
    target.chmod(0o600)
    result = subprocess.run(["netplan", "generate", "--root-dir", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    network = (tmp_path / "run" / "systemd" / "network" / "10-netplan-lo.network").read_text()
    assert "Name=lo" in network
    for vip in vips:
        assert f"Address={vip}/{128 if ':' in vip else 32}" in network
