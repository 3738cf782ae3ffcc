"""Health checking, sans I/O: the probe's wire format and the rise/fall state machine."""

from __future__ import annotations

import dataclasses
import struct

from pesigitg.daemon.health import MAX_BACKOFF, HealthState, build_probe, is_version_negotiation
from pesigitg.daemon.sdnotify import Notifier
from pesigitg.routing.route_config import HealthSpec
from tests.netns.peer import version_negotiation

SPEC = dataclasses.replace(HealthSpec.default(), interval_ms=1000, rise=2, fall=3)


def test_probe_is_a_1200_octet_long_header_with_a_reserved_version():
    probe = build_probe(b"D" * 8, b"S" * 8)
    assert len(probe) == 1200 and probe[0] & 0xC0 == 0xC0
    version = struct.unpack("!I", probe[1:5])[0]
    assert version & 0x0F0F0F0F == 0x0A0A0A0A      # RFC 9000 §15: 0x?a?a?a?a
    assert probe[5] == 8 and probe[6:14] == b"D" * 8 and probe[15:23] == b"S" * 8


def test_only_a_matching_version_negotiation_counts():
    dcid, scid = b"D" * 8, b"S" * 8
    reply = version_negotiation(build_probe(dcid, scid))
    assert reply is not None and is_version_negotiation(reply, dcid, scid)
    assert not is_version_negotiation(reply, b"X" * 8, scid)          # not our probe
    assert not is_version_negotiation(reply[:12], dcid, scid)         # truncated
    not_vn = reply[:1] + b"\0\0\0\1" + reply[5:]
    assert not is_version_negotiation(not_vn, dcid, scid)             # version 1, not VN


def test_the_first_probe_decides_and_nothing_goes_to_an_unprobed_backend():
    fresh = HealthState()
    assert not fresh.usable(SPEC) and fresh.describe(SPEC) == "down (not probed yet)"
    off = dataclasses.replace(HealthSpec.default(), enabled=False)
    assert fresh.usable(off) and fresh.describe(off) == "up (assumed: health checks off)"
    assert fresh.record(True, SPEC, "ok", 0) is False         # was assumed up, still up
    assert fresh.usable(SPEC) and fresh.describe(SPEC) == "up (probed)"
    dead = HealthState()
    assert dead.record(False, SPEC, "timeout", 0) is True     # one failure, not fall = 3
    assert not dead.usable(SPEC) and dead.describe(SPEC) == "down (probed)"
    assert [dead.record(True, SPEC, "ok", 0) for _ in range(2)] == [False, True]  # rise


def test_a_backend_goes_down_after_fall_failures_and_up_after_rise_successes():
    state = HealthState(probed=True)
    assert state.up
    assert [state.record(False, SPEC, "timeout", 0) for _ in range(3)] == [False, False, True]
    assert not state.up
    assert [state.record(True, SPEC, "ok", 0) for _ in range(2)] == [False, True]
    assert state.up


def test_a_success_resets_the_failure_count():
    state = HealthState(probed=True)
    for result in (False, False, True, False, False):
        state.record(result, SPEC, "", 0)
    assert state.up


def test_down_backends_are_probed_with_exponential_back_off():
    state = HealthState(probed=True)
    delays = []
    for _ in range(8):
        state.record(False, SPEC, "timeout", 0)
        delays.append(state.delay(SPEC))
    assert delays[:3] == [1.0, 1.0, 1.0]                 # still up until the third failure
    assert delays[3:] == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert max(delays) == MAX_BACKOFF
    state.record(True, SPEC, "ok", 0)
    assert state.delay(SPEC) == 1.0


def test_notifier_reads_the_systemd_environment():
    abstract = Notifier({"NOTIFY_SOCKET": "@pesigitg/notify", "WATCHDOG_USEC": "3000000"})
    assert abstract.address == b"\0pesigitg/notify" and abstract.watchdog_interval == 1.5
    assert not Notifier({}).enabled
    other = Notifier({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"})
    assert other.enabled and other.watchdog_interval is None    # the watchdog is not ours
