"""contrib scripts for real, inside a throwaway namespace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pesigitg.testing.netns import ip, namespace

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def sysctl(ns: str, key: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", key], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_dsr_backend_puts_the_vip_on_loopback_and_silences_arp():
    with namespace("pesi-dsr") as ns:
        script = ["ip", "netns", "exec", ns, str(CONTRIB / "dsr-backend.sh")]
        subprocess.run([*script, "198.51.100.10"], check=True)
        subprocess.run([*script, "198.51.100.10"], check=True)      # idempotent
        assert "inet 198.51.100.10/32" in ip("addr", "show", "dev", "lo", ns=ns)
        assert sysctl(ns, "net.ipv4.conf.all.arp_ignore") == "1"
        assert sysctl(ns, "net.ipv4.conf.all.arp_announce") == "2"
        subprocess.run([*script, "--remove", "198.51.100.10"], check=True)
        assert "198.51.100.10" not in ip("addr", "show", "dev", "lo", ns=ns)
