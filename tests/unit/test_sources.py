"""Where health probes and neighbour solicitations leave from: never a VIP."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pesigitg.daemon.settings import DaemonConfig, load_daemon_config, merge
from pesigitg.daemon.sources import Candidate, SourceError, choose_sources
from pesigitg.errors import ConfigError


def c(text: str, **flags: bool) -> Candidate:
    return Candidate(ipaddress.ip_interface(text), **flags)


BACKENDS6 = ["fd00:217::21", "fd00:217::22", "fd00:217::23"]


@pytest.mark.parametrize("listed", [True, False], ids=["vip-listed", "vip-not-listed"])
@pytest.mark.parametrize("vip_first", [True, False], ids=["vip-added-first", "vip-added-last"])
def test_a_vip_in_the_backends_64_is_never_the_source(listed, vip_first):
    # The deployment: the VIP as a /128 on the balancer's interface, inside the
    # /64 of the balancer and its backends (the kernel would pick the VIP: longest match).
    own, vip = c("fd00:217::2/64"), c("fd00:217::100/128")
    candidates = [vip, own] if vip_first else [own, vip]
    sources = choose_sources("eth1", candidates, ["fd00:217::100"] if listed else [],
                             BACKENDS6)
    assert sources.addresses == {6: "fd00:217::2"} and sources.how == {6: "automatic"}
    assert sources.for_backend("fd00:217::22") == "fd00:217::2"
    assert sources.describe() == {"ipv4": None,
                                  "ipv6": {"address": "fd00:217::2", "chosen": "automatic"}}


def test_the_address_in_the_backends_prefix_wins_per_family():
    candidates = [c("198.51.100.10/32"), c("192.0.2.9/24"), c("10.1.0.2/24"),
                  c("2001:db8:9::1/64"), c("fd00:217::2/64")]
    sources = choose_sources("eth1", candidates, ["198.51.100.10"],
                             ["10.1.0.21", "10.1.0.22", "fd00:217::21"])
    assert sources.addresses == {4: "10.1.0.2", 6: "fd00:217::2"}


def test_a_primary_address_beats_a_secondary_one_in_the_same_prefix():
    candidates = [c("10.1.0.100/24", secondary=True), c("10.1.0.2/24")]
    assert choose_sources("eth1", candidates, [], ["10.1.0.21"]).addresses == {4: "10.1.0.2"}


def test_no_usable_address_is_a_clear_error_naming_the_fix():
    with pytest.raises(SourceError) as raised:
        choose_sources("eth1", [c("10.1.0.2/24"), c("fd00:217::100/128")],
                       ["fd00:217::100"], ["10.1.0.21", *BACKENDS6])
    message = str(raised.value)
    assert message == (
        "no IPv6 address on eth1 to probe and resolve the IPv6 backends (fd00:217::21, "
        "fd00:217::22, fd00:217::23) from (fd00:217::100 is a VIP): add one in their prefix "
        "(ip -6 addr add ADDRESS/64 dev eth1) or set source_address")


def test_a_host_address_covering_no_backend_is_never_guessed_to_be_ours():
    with pytest.raises(SourceError, match=r"\(fd00:217::100/128 covers none of them and "
                                          r"may be a VIP\)"):
        choose_sources("eth1", [c("fd00:217::100/128")], [], BACKENDS6)
    # Not a host address: on-link through a route of its own; taken.
    assert choose_sources("eth1", [c("2001:db8::2/64")], [], BACKENDS6).addresses == \
        {6: "2001:db8::2"}


def test_a_tentative_address_is_not_used_and_the_error_says_so():
    with pytest.raises(SourceError, match=r"fd00:217::2 is still tentative"):
        choose_sources("eth1", [c("fd00:217::2/64", tentative=True)], [], BACKENDS6)


def test_a_family_without_backends_needs_no_source():
    sources = choose_sources("eth1", [c("10.1.0.2/24")], [], ["10.1.0.21"])
    assert sources.addresses == {4: "10.1.0.2"} and sources.for_backend("fd00::1") is None


def test_a_configured_source_is_used_if_it_is_the_interfaces_and_not_a_vip():
    candidates = [c("fd00:217::2/64"), c("fd00:217::3/64")]
    sources = choose_sources("eth1", candidates, [], BACKENDS6, ["fd00:217::3"])
    assert sources.addresses == {6: "fd00:217::3"} and sources.how == {6: "configured"}
    with pytest.raises(SourceError, match=r"^source_address fd00:217::9 is not an address "
                                          r"of eth1$"):
        choose_sources("eth1", candidates, [], BACKENDS6, ["fd00:217::9"])
    with pytest.raises(SourceError, match=r"^source_address fd00:217::3 is a VIP"):
        choose_sources("eth1", candidates, ["fd00:217::3"], BACKENDS6, ["fd00:217::3"])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pesigitgd.conf"
    path.write_text("interface = eth1\nroute_config = lb.toml\n" + text)
    return path


def test_source_address_settings(tmp_path):
    config = load_daemon_config(write(tmp_path, "source_address = 10.1.0.2\n"
                                                "source_address = fd00:217:0::2\n"))
    assert config.source_addresses == ("10.1.0.2", "fd00:217::2")
    assert config.describe()["source_addresses"] == ["10.1.0.2", "fd00:217::2"]
    with pytest.raises(ConfigError, match=r":4: source_address = 'fd00::3': a second IPv6 "
                                          r"address \(first on line 3\); give at most one "
                                          r"per address family"):
        load_daemon_config(write(tmp_path, "source_address = fd00::2\n"
                                           "source_address = fd00::3\n"))
    with pytest.raises(ConfigError, match=r"command line: source_address: 2 IPv4 addresses"):
        merge(DaemonConfig(interface="eth1", route_config=Path("lb.toml")),
              {"source_address": ["10.1.0.2", "10.1.0.3"]})
    for bad, why in (("fe80::1", "link-local"), ("ff02::1", "multicast"),
                     ("10.1.0.2/24", "not an IPv4 or IPv6 address"),
                     ("\uff110.1.0.2", "not an IPv4 or IPv6 address")):
        with pytest.raises(ConfigError, match=why):
            load_daemon_config(write(tmp_path, f"source_address = {bad}\n"))
    # The command line replaces the file's list.
    merged = merge(config, {"source_address": ["10.1.0.3"]})
    assert merged.source_addresses == ("10.1.0.3",)
