"""netns tier: veth pairs in throwaway namespaces (root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pesigitg.ebpf.attach import ifindex
from pesigitg.testing.daemon import RunningDaemon
from pesigitg.testing.netns import inside, ip, mac_of, namespace, veth_pair
from pesigitg.testing.traffic import Traffic, compile_traffic

# The backends' MACs in these tests are 02:be:00:00:00:NN (test_daemon.MAC1...).
BACKEND_MAC_PREFIX = bytes([2, 0xBE, 0, 0, 0])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.root)


@pytest.fixture
def veth_ns() -> Iterator[str]:
    """A namespace holding the veth pair v0 <-> v1."""
    with namespace() as ns:
        veth_pair(ns, "v0", "v1")
        yield ns


class Lab:
    """Namespaces ``lb`` (v0, 10.9.0.1) and ``peer`` (v1, 10.9.0.2 and friends)."""

    def __init__(self, lb_ns: str, peer_ns: str, workdir: Path) -> None:
        self.lb_ns, self.peer_ns, self.workdir = lb_ns, peer_ns, workdir
        self.lb_mac = mac_of(lb_ns, "v0")
        self.peer_mac = mac_of(peer_ns, "v1")

    def add_backend_address(self, address: str) -> None:
        ip("addr", "add", f"{address}/24", "dev", "v1", ns=self.peer_ns)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with namespace("pesi-lb") as lb_ns, namespace("pesi-peer") as peer_ns:
        veth_pair(lb_ns, "v0", "v1", peer_ns)
        ip("addr", "add", "10.9.0.1/24", "dev", "v0", ns=lb_ns)
        ip("addr", "add", "10.9.0.2/24", "dev", "v1", ns=peer_ns)
        with inside(peer_ns), open("/proc/sys/net/ipv6/conf/v1/disable_ipv6", "w") as f:
            f.write("1")
        yield Lab(lb_ns, peer_ns, tmp_path)


@pytest.fixture
def daemons(lab: Lab) -> Iterator[list[RunningDaemon]]:
    """Daemons a test starts; all stopped (and checked) afterwards."""
    started: list[RunningDaemon] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session")
def traffic_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_traffic(tmp_path_factory.mktemp("traffic"))


@pytest.fixture
def traffic(lab: Lab, traffic_object: Path) -> Iterator[Traffic]:
    """The sink on v1 (an XDP program: it also receives what the balancer sends with
    XDP_TX), counting frames to the backends' MACs by their last octet."""
    with inside(lab.peer_ns):
        index = ifindex("v1")
    sink = Traffic(traffic_object, lab.peer_ns, index)
    sink.count_macs(BACKEND_MAC_PREFIX)
    try:
        yield sink
    finally:
        sink.close()
