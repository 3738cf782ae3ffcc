"""The routing fingerprint (pesigitgd(8), ROUTING FINGERPRINT): equal for configurations
that route alike, different when anything it covers differs, and never a function of
a key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pesigitg.routing.fingerprint import routing_facts, routing_fingerprint
from pesigitg.routing.route_config import load_route_config

KEY, OTHER_KEY = "8f95f09245765f80256934e50c66207f", "00112233445566778899aabbccddeeff"
HASH_KEY = "ffeeddccbbaa99887766554433221100"
BASE = {"vips": '["198.51.100.10", "2001:db8::10"]', "table_size": "5003",
        "hash_key": "", "key": KEY, "server_id_length": "3", "second_sid": "000002",
        "second_address": "192.0.2.12", "draining": "false", "encodes": "true"}


def lb_toml(**changes: str) -> str:
    v = {**BASE, **changes}
    hash_key = f'hash_key = "{v["hash_key"]}"\n' if v["hash_key"] else ""
    key = f'key = "{v["key"]}"\n' if v["key"] else ""
    width = 2 * int(v["server_id_length"])
    return (f"vips = {v['vips']}\n[fallback]\ntable_size = {v['table_size']}\n{hash_key}\n"
            f"[[configs]]\nconfig_id = 1\nserver_id_length = {v['server_id_length']}\n"
            f"nonce_length = 6\n{key}first_octet_encodes_cid_length = {v['encodes']}\n"
            f'  [[configs.servers]]\n  id = "{"01".rjust(width, "0")}"\n'
            f'  address = "192.0.2.11"\n'
            f'  [[configs.servers]]\n  id = "{v["second_sid"].rjust(width, "0")}"\n'
            f'  address = "{v["second_address"]}"\n  draining = {v["draining"]}\n')


def fingerprint(tmp_path: Path, ports: tuple[int, ...] = (443,), drained: tuple[str, ...] = (),
                **changes: str) -> str:
    path = tmp_path / f"lb-{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(lb_toml(**changes))
    routes = load_route_config(path)
    draining = [a for a in routes.addresses if routes.backend_draining(a) or a in drained]
    return routing_fingerprint(routes, ports, draining)


def test_the_same_configuration_gives_the_same_fingerprint(tmp_path):
    first = fingerprint(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert fingerprint(tmp_path) == first
    # Order that decides nothing: VIPs listed the other way round, ports repeated.
    assert fingerprint(tmp_path, vips='["2001:db8::10", "198.51.100.10"]') == first
    assert fingerprint(tmp_path, ports=(443, 443)) == first


@pytest.mark.parametrize("change", [
    {"vips": '["198.51.100.10"]'},                      # the VIPs
    {"table_size": "65537"},                            # the Maglev size
    {"hash_key": HASH_KEY},                             # the hash key's presence
    {"key": ""},                                        # keyed or not (mode)
    {"server_id_length": "4"},                          # lengths
    {"encodes": "false"},                               # length encoding
    {"second_sid": "000003"},                           # a server ID
    {"second_address": "192.0.2.13"},                   # a server's address
    {"draining": "true"},                               # the pool (lb.toml drain)
], ids=lambda c: next(iter(c)))
def test_anything_that_decides_routing_changes_it(tmp_path, change):
    assert fingerprint(tmp_path, **change) != fingerprint(tmp_path)


def test_ports_and_run_time_drains_change_it(tmp_path):
    base = fingerprint(tmp_path)
    assert fingerprint(tmp_path, ports=(443, 8443)) != base
    # A run-time drain (pesigitg-ctl drain) takes the backend out of the pool too.
    assert fingerprint(tmp_path, drained=("192.0.2.12",)) == \
        fingerprint(tmp_path, draining="true") != base


def test_no_key_goes_in_not_even_as_a_digest(tmp_path):
    """Two keys give one fingerprint: nothing in it can confirm a guessed key."""
    assert fingerprint(tmp_path, key=OTHER_KEY) == fingerprint(tmp_path)
    assert fingerprint(tmp_path, hash_key=OTHER_KEY) == fingerprint(tmp_path, hash_key=HASH_KEY)
    path = tmp_path / "keys.toml"
    path.write_text(lb_toml(hash_key=HASH_KEY))
    facts = json.dumps(routing_facts(load_route_config(path), (443,), ())).lower()
    assert KEY not in facts and HASH_KEY not in facts
