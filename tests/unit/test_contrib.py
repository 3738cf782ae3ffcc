"""What ships in contrib/ works: example configs validate, scripts do what they say."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

from pesigitg.daemon.main import daemon_main

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def test_example_configs_pass_check(tmp_path, capsys):
    for name in ("pesigitgd.conf", "lb.toml"):
        shutil.copy(CONTRIB / name, tmp_path / name)
    assert daemon_main(["--check", "-c", str(tmp_path / "pesigitgd.conf")]) == 0
    assert "configuration OK: interface eth1" in capsys.readouterr().out


def test_systemd_units_use_notify_watchdog_and_the_hitless_restart():
    for unit in ("pesigitgd.service", "pesigitgd@.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(CONTRIB / "systemd" / unit)
        service = parser["Service"]
        assert service["Type"] == "notify" and service["WatchdogSec"]
        # The new process that takes over reports MAINPID itself: NotifyAccess=all.
        assert service["ExecReload"].startswith("/usr/bin/pesigitg-ctl")
        assert service["ExecReload"].endswith(" restart")
        assert service["NotifyAccess"] == "all"
        assert "--check" in service["ExecStartPre"]
    template = (CONTRIB / "systemd" / "pesigitgd@.service").read_text()
    assert "/etc/pesigitg/%i.conf" in template


def test_systemd_units_run_as_a_user_with_the_supervisors_capabilities_only():
    """The same hardening in both units, and exactly the capabilities pesigitgd keeps
    (tests/netns/test_privileges.py runs the daemon under them)."""
    from pesigitg.daemon.privileges import SUPERVISOR_CAPS
    from pesigitg.errors import CAP_NAMES
    from pesigitg.testing.systemd_unit import service_settings

    single, template = (service_settings(CONTRIB / "systemd" / unit)
                        for unit in ("pesigitgd.service", "pesigitgd@.service"))
    execs = ("ExecStartPre", "ExecStart", "ExecReload")
    assert {k: v for k, v in single.items() if k not in execs} == \
        {k: v for k, v in template.items() if k not in execs}
    caps = {CAP_NAMES[cap] for cap in SUPERVISOR_CAPS}
    assert set(single["AmbientCapabilities"][0].split()) == caps
    assert set(single["CapabilityBoundingSet"][0].split()) == caps
    assert single["User"] == ["pesigitg"] and single["NoNewPrivileges"] == ["yes"]
    assert single["RuntimeDirectory"] == ["pesigitg"]
    assert "AF_XDP" in single["RestrictAddressFamilies"][0].split()


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONTRIB / script), *args], capture_output=True, text=True,
                          check=False)


def test_dns_rr_prints_https_records_per_rfc9460():
    result = run("dns-rr.sh", "quic.example.net", "8443", "--ttl", "60", "--ipv4",
                 "198.51.100.10", "--ipv4", "198.51.100.11", "--ipv6", "2001:db8::10",
                 "--ech", "AEX+DQBBAQAg")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        'quic.example.net. 60 IN HTTPS 1 . alpn="h3,h2" port=8443 '
        'ipv4hint=198.51.100.10,198.51.100.11 ipv6hint=2001:db8::10 ech="AEX+DQBBAQAg"',
        "quic.example.net. 60 IN A 198.51.100.10",
        "quic.example.net. 60 IN A 198.51.100.11",
        "quic.example.net. 60 IN AAAA 2001:db8::10",
    ]


def test_dns_rr_refuses_bad_ports():
    assert "port 70000 is outside 1..65535" in run("dns-rr.sh", "a.example", "70000").stderr
    assert "port 'x' is not a number" in run("dns-rr.sh", "a.example", "x").stderr
    assert run("dns-rr.sh", "a.example").returncode == 2


def test_dsr_backend_dry_run_prints_what_it_would_do():
    result = run("dsr-backend.sh", "--dry-run", "198.51.100.10", "2001:db8::10")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["ip addr add 198.51.100.10/32 dev lo",
                         "ip addr add 2001:db8::10/128 dev lo"]
    assert "sysctl -q -w net.ipv4.conf.all.arp_ignore=1" in lines
    assert "sysctl -q -w net.ipv4.conf.all.arp_announce=2" in lines
    removal = run("dsr-backend.sh", "--remove", "--dry-run", "198.51.100.10")
    assert removal.stdout.splitlines() == ["ip addr del 198.51.100.10/32 dev lo"]
    assert "is not an IPv4 or IPv6 address" in run("dsr-backend.sh", "--dry-run", "vip").stderr


# -- contrib/bgp: the files the ECMP test and demo run ---------------------------------------

BGP_VALUES = {"SELF": "192.0.2.11", "SELF6": "2001:db8::11", "ROUTER": "192.0.2.1",
              "LOCAL_AS": "64513", "PEER_AS": "64512", "VIP": "198.51.100.1",
              "VIP6": "2001:db8:1::1", "CTL": "/opt/pesigitg/bin/pesigitg-ctl -i eth1",
              "PYTHON": "/usr/bin/python3"}


def render(template: str, **values: str) -> subprocess.CompletedProcess[str]:
    return run("bgp/render.sh", str(CONTRIB / "bgp" / template),
               *(f"{k}={v}" for k, v in values.items()))


def test_render_fills_every_placeholder_and_keeps_slashes_and_ampersands():
    result = render("exabgp-balancer.conf", **{**BGP_VALUES, "CTL": "/a&b|c/ctl -s /x"})
    assert result.returncode == 0, result.stderr
    assert not re.search("@[A-Z0-9_]+@", result.stdout)
    assert '--cmd "/a&b|c/ctl -s /x health"' in result.stdout
    assert "--ip 198.51.100.1/32 --next-hop 192.0.2.11" in result.stdout
    assert "--ip 2001:db8:1::1/128 --next-hop 2001:db8::11" in result.stdout


def test_render_refuses_to_leave_a_placeholder_or_take_a_bad_name():
    values = dict(BGP_VALUES)
    del values["VIP6"]
    result = render("exabgp-balancer.conf", **values)
    assert result.returncode == 1 and result.stdout == ""
    assert "exabgp-balancer.conf still needs: @VIP6@" in result.stderr
    result = run("bgp/render.sh", str(CONTRIB / "bgp" / "bird-router.conf"), "lb1=x")
    assert result.returncode == 2 and "bad name in 'lb1=x'" in result.stderr


def test_the_rendered_bgp_configurations_parse(tmp_path):
    """BIRD parses the router's file (bird -p) and ExaBGP validates the balancer's."""
    bird = shutil.which("bird") or shutil.which("bird", path="/usr/sbin")
    exabgp = shutil.which("exabgp") or shutil.which("exabgp", path="/usr/sbin")
    assert bird and exabgp, "make test installs bird2 and exabgp"
    router = render("bird-router.conf", ROUTER_ID="192.0.2.1", ROUTER="192.0.2.1",
                    LOCAL_AS="64512", PEER_AS="64513", VIP="198.51.100.1",
                    VIP6="2001:db8:1::1", LB1="192.0.2.11", LB2="192.0.2.12")
    (tmp_path / "bird.conf").write_text(router.stdout)
    parsed = subprocess.run([bird, "-p", "-c", str(tmp_path / "bird.conf")],
                            capture_output=True, text=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
    (tmp_path / "exabgp.conf").write_text(render("exabgp-balancer.conf", **BGP_VALUES).stdout)
    validated = subprocess.run([exabgp, "--validate", str(tmp_path / "exabgp.conf")],
                               capture_output=True, text=True, check=False,
                               env={"PATH": "/usr/bin:/bin", "exabgp_api_cli": "false"})
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "neighbor 192.0.2.1 {" in validated.stdout + validated.stderr
