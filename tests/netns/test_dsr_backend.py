"""contrib/dsr-backend.sh on a real (namespaced) backend, and the IPv6 fact it relies
on: a VIP on lo is not answered for on the wire."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from pesigitg.testing.netns import inside, ip, namespace, veth_pair

SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "dsr-backend.sh"


def run(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, str(SCRIPT), *args],
                          capture_output=True, text=True, timeout=30)


def lo_addresses(ns: str) -> list[str]:
    return [line.split()[3] for line in ip("-o", "addr", "show", "dev", "lo", ns=ns)
            .splitlines()]


def test_an_address_already_on_lo_is_recognised_whatever_its_spelling():
    with namespace("pesi-dsr") as ns:
        ip("link", "set", "lo", "up", ns=ns)
        ip("addr", "add", "fd00:0:0::100/128", "dev", "lo", ns=ns)
        done = run(ns, "fd00::0100", "192.0.2.100")
        assert done.returncode == 0, done.stderr
        assert run(ns, "192.0.2.100").returncode == 0            # twice: still fine
        assert sorted(lo_addresses(ns)) == ["127.0.0.1/8", "192.0.2.100/32", "::1/128",
                                            "fd00::100/128"]
        removed = run(ns, "--remove", "fd00:0::100", "fd00::200")
        assert removed.returncode == 0
        assert removed.stderr == "dsr-backend.sh: fd00::200 is not on lo\n"
        assert "fd00::100/128" not in lo_addresses(ns)


def test_ipv6_disabled_on_lo_is_said_clearly():
    with namespace("pesi-dsr") as ns:
        with inside(ns), open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "w") as f:
            f.write("1")
        done = run(ns, "fd00::100")
        assert done.returncode == 1
        assert done.stderr == (
            "dsr-backend.sh: fd00::100: IPv6 is disabled on lo "
            "(net.ipv6.conf.lo.disable_ipv6 = 1); enable it with "
            "'sysctl -w net.ipv6.conf.lo.disable_ipv6=0' (and make it persistent in "
            "/etc/sysctl.d)\n")


def test_ipv6_needs_no_sysctl_a_vip_on_lo_is_not_answered_on_the_wire():
    """The README's claim: a backend with the VIP on lo does not answer neighbour
    solicitations for it, so only the balancer attracts the VIP's traffic."""
    with namespace("pesi-dsr") as backend, namespace("pesi-cli") as client:
        veth_pair(backend, "b0", "c0", client)
        ip("-6", "addr", "add", "fd00:5::2/64", "dev", "b0", "nodad", ns=backend)
        ip("-6", "addr", "add", "fd00:5::10/64", "dev", "c0", "nodad", ns=client)
        assert run(backend, "fd00:5::100").returncode == 0
        with inside(client):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        with sock:
            for address in ("fd00:5::2", "fd00:5::100"):
                sock.sendto(b"x", (address, 9))
        deadline = time.monotonic() + 5
        while "fd00:5::2 " not in ip("-6", "neigh", "show", "dev", "c0", ns=client):
            assert time.monotonic() < deadline, "the backend's own address did not resolve"
            time.sleep(0.05)
        time.sleep(1.5)             # the solicitations for the VIP had their time
        table = ip("-6", "neigh", "show", "dev", "c0", ns=client)
        vip = [line for line in table.splitlines() if line.startswith("fd00:5::100 ")]
        assert not vip or "lladdr" not in vip[0], table
