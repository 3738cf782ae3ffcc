"""Configuration errors an operator sees from `pesigitgd --check`: file, line or key, value."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pesigitg.daemon.main import daemon_main
from pesigitg.daemon.settings import load_daemon_config, merge
from pesigitg.errors import ConfigError
from pesigitg.routing.route_config import load_route_config

KEY = "8f95f09245765f80256934e50c66207f"
GOOD_TOML = f"""
vips = ["198.51.100.1"]

[health]
interval_ms = 500
timeout_ms = 200

[[configs]]
config_id = 0
server_id_length = 3
nonce_length = 4
key = "{KEY}"

  [[configs.servers]]
  id = "010203"
  address = "10.0.0.2"
  mac = "02:00:00:00:00:02"
"""
GOOD_CONF = "interface = eth0  # data plane\nport = 443\nport = 8443\nroute_config = lb.toml\n"


def check(tmp_path: Path, capsys, conf: str = GOOD_CONF, toml: str = GOOD_TOML,
          *flags: str) -> tuple[int, str]:
    (tmp_path / "d.conf").write_text(conf)
    (tmp_path / "lb.toml").write_text(toml)
    code = daemon_main(["--check", "-c", str(tmp_path / "d.conf"), *flags])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_valid_configuration_checks_ok(tmp_path, capsys):
    code, text = check(tmp_path, capsys)
    assert code == 0
    assert ("configuration OK: interface eth0, ports 443, 8443, 1 QUIC-LB config(s), "
            "1 server(s) on 1 backend(s)") in text


DAEMON_CASES = [
    ("interface = v0\nport = 70000\nroute_config = lb.toml",
     "d.conf:2: port = '70000': must be between 1 and 65535"),
    ("interface = v0\nport = 44x\n", "d.conf:2: port = '44x': not a decimal number"),
    ("interface = v0\nbogus = 1\n", "d.conf:2: bogus: unknown setting"),
    ("interface v0\n", "d.conf:1: expected 'key = value', found 'interface v0'"),
    ("interface = v0\ninterface = v1\n",
     "d.conf:2: interface = 'v1': given twice (first on line 1)"),
    ("interface = far-too-long-name0\n", "d.conf:1: interface = 'far-too-long-name0': not an "
                                         "interface name"),
    ("interface = v0\nqueues = 0\n", "d.conf:2: queues = '0': must be between 1 and 256"),
    ("interface = v0\nxdp_mode = turbo\n",
     "d.conf:2: xdp_mode = 'turbo': must be one of native, generic"),
    ("interface = v0\nmetrics_listen = 9464\n", "d.conf:2: metrics_listen = '9464': not "
     "ADDRESS:PORT (an IPv6 address in brackets: [2001:db8::1]:9464)"),
    ("interface = v0\nmetrics_listen = ::1:9464\n", "d.conf:2: metrics_listen = '::1:9464': "
     "not ADDRESS:PORT"),
    ("interface = v0\nmetrics_listen = [10.0.0.1]:9464\n",
     "an IPv6 address goes in brackets, an IPv4 address without"),
    ("interface = v0\nmetrics_listen = localhost:9464\n",
     "d.conf:2: metrics_listen = 'localhost:9464': not an IPv4 or IPv6 address (a name is "
     "not accepted)"),
    ("interface = v0\nmetrics_listen = 10.0.0.1:0\n",
     "d.conf:2: metrics_listen = '10.0.0.1:0': port: must be between 1 and 65535"),
    ("interface = v0\nmetrics_listen = [ff02::1]:9464\n",
     "a multicast address cannot be listened on"),
    ("port = 443\nroute_config = lb.toml\n", "no interface given"),
    ("interface = v0\n", "no route config given"),
    ("interface = v0\nroute_config = missing.toml\n",
     "missing.toml: cannot read: No such file or directory"),
]


@pytest.mark.parametrize(("conf", "message"), DAEMON_CASES,
                         ids=[m.split(": ")[-1][:40] for _, m in DAEMON_CASES])
def test_malformed_daemon_config_names_file_line_and_value(tmp_path, capsys, conf, message):
    code, text = check(tmp_path, capsys, conf)
    assert code == 1
    assert message in text


def config_with(**overrides: str) -> str:
    return GOOD_TOML.replace(*overrides["replace"]) if "replace" in overrides else GOOD_TOML


TOML_CASES = [
    (("nonce_length = 4", "nonce_length = = 4"), "lb.toml:11: TOML syntax error"),
    (("config_id = 0", "config_id = 7"), "configs[0].config_id = 7: must be between 0 and 6"),
    (("config_id = 0", 'config_id = "zero"'),
     "configs[0].config_id = 'zero': expected an integer"),
    (("nonce_length = 4", "nonce_length = 17"),
     "configs[0]: server_id_len + nonce_len = 20 exceeds the maximum of 19"),
    ((f'key = "{KEY}"', 'key = "not-hex-not-hex-not-hex-not!"'),
     "configs[0].key = (hidden): must be 32 hex digits (a 16-octet AES key)"),
    (('id = "010203"', 'id = "zz0102"'), "configs[0].servers[0].id = 'zz0102': not hex octets"),
    (('id = "010203"', 'id = "0102"'),
     "configs[0].servers[0].id = '0102': is 2 octets, server_id_length is 3"),
    (('address = "10.0.0.2"', 'address = "10.0.0.300"'),
     "configs[0].servers[0].address = '10.0.0.300': not an IPv4 or IPv6 address"),
    (('mac = "02:00:00:00:00:02"', 'mac = "02:00"'),
     "configs[0].servers[0].mac = '02:00': not a MAC address"),
    (('mac = "02:00:00:00:00:02"', 'mac = "02:00:00:00:00:02"\n  weight = 3'),
     "configs[0].servers[0].weight: unknown key (known: address, draining, id, mac)"),
    (('mac = "02:00:00:00:00:02"', 'mac = "02:00:00:00:00:02"\n  draining = "yes"'),
     "configs[0].servers[0].draining = 'yes': expected true or false"),
    (("interval_ms = 500", 'interval_ms = "fast"'),
     "health.interval_ms = 'fast': expected an integer"),
    (("timeout_ms = 200", "timeout_ms = 900"),
     "health.timeout_ms = 900: must not exceed interval_ms (500)"),
    (("[health]", "[fallback]\ntable_size = 65536\n[health]"),
     "fallback.table_size = 65536: must be a prime (Maglev)"),
    (('vips = ["198.51.100.1"]', 'vips = ["vip"]'),
     "vips[0] = 'vip': not an IPv4 or IPv6 address"),
    (('vips = ["198.51.100.1"]', 'weights = 1'), "weights: unknown key"),
    (("[[configs]]", "[[configs]]\nconfig_id = 0\nserver_id_length = 1\nnonce_length = 4\n"
                     "[[configs]]"),
     "configs[1].config_id = 0: duplicate of configs[0].config_id"),
]


@pytest.mark.parametrize(("replace", "message"), TOML_CASES,
                         ids=[m.split(": ")[0][:40] for _, m in TOML_CASES])
def test_malformed_route_config_names_file_key_and_value(tmp_path, capsys, replace, message):
    code, text = check(tmp_path, capsys, GOOD_CONF, GOOD_TOML.replace(*replace))
    assert code == 1
    assert "lb.toml" in text and message in text
    assert KEY not in text and "not-hex-not-hex" not in text


def test_duplicate_server_ids_and_conflicting_macs(tmp_path, capsys):
    twice = GOOD_TOML + '\n  [[configs.servers]]\n  id = "010203"\n  address = "10.0.0.3"\n'
    code, text = check(tmp_path, capsys, GOOD_CONF, twice)
    assert code == 1 and ("configs[0].servers[1].id = '010203': duplicate of "
                          "configs[0].servers[0].id") in text
    other_mac = (GOOD_TOML + '\n  [[configs.servers]]\n  id = "040506"\n'
                 '  address = "10.0.0.2"\n  mac = "02:00:00:00:00:09"\n')
    code, text = check(tmp_path, capsys, GOOD_CONF, other_mac)
    assert code == 1 and "backend 10.0.0.2 is given different MACs" in text


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        daemon_main(["--check", "-i", "eth0", "-p", "70000"])
    assert info.value.code == 2
    assert "argument -p/--port: must be between 1 and 65535" in capsys.readouterr().err


def test_command_line_wins_and_route_config_is_relative_to_the_file(tmp_path):
    (tmp_path / "d.conf").write_text(GOOD_CONF + "queues = 2\n")
    file_config = load_daemon_config(tmp_path / "d.conf")
    assert file_config.ports == (443, 8443) and file_config.queues == 2
    assert file_config.route_config == tmp_path / "lb.toml"
    merged = merge(file_config, {"port": [4433], "queues": 4, "interface": None})
    assert merged.ports == (4433,) and merged.queues == 4 and merged.interface == "eth0"
    assert merged.effective_pidfile == Path("/run/pesigitg/pesigitgd-eth0.pid")
    assert merged.effective_status_socket == Path("/run/pesigitg/pesigitgd-eth0.sock")


def test_metrics_listen_repeats_and_is_normalised(tmp_path):
    (tmp_path / "d.conf").write_text(GOOD_CONF + "metrics_listen = 192.0.2.2:9464\n"
                                     "metrics_listen = [2001:0db8::0002]:9464\n"
                                     "metrics_listen = 192.0.2.2:9464\n")
    config = load_daemon_config(tmp_path / "d.conf")
    assert config.metrics_listen == ("192.0.2.2:9464", "[2001:db8::2]:9464")
    assert merge(config, {"metrics_listen": ["[::]:9100"]}).metrics_listen == ("[::]:9100",)
    assert config.describe()["metrics_listen"] == ["192.0.2.2:9464", "[2001:db8::2]:9464"]


# -- hostile and careless input -----------------------------------------------------------

# Every way an operator may paste a key wrongly; none may echo it anywhere.
KEY_SHAPES = {
    "unquoted": f"key = {KEY}",
    "unterminated": f'key = "{KEY}',
    "unterminated-multiline": f'key = """{KEY}',
    "hex-prefix": f"key = 0x{KEY}",
    "inside-an-array": f'key = ["{KEY}"]',
    "unquoted-in-an-array": f"key = [{KEY}]",
    "date-like": "key = 1979-05-27T07:32:00",
    "uuid-like": f"key = {KEY[:8]}-{KEY[8:12]}-{KEY[12:16]}-{KEY[16:20]}-{KEY[20:]}",
    "inline-table": f"key = {{ value = {KEY} }}",
    "as-a-key-name": f"{KEY} = 1",
    "as-a-bare-line": KEY,
    "as-a-table-name-twice": f"[{KEY}]\n[{KEY}]",
}


@pytest.mark.parametrize("shape", sorted(KEY_SHAPES))
def test_a_malformed_key_is_reported_without_being_shown(tmp_path, capsys, shape):
    code, text = check(tmp_path, capsys, GOOD_CONF,
                       GOOD_TOML.replace(f'key = "{KEY}"', KEY_SHAPES[shape]))
    assert code == 1 and text.startswith("pesigitgd: ")
    assert "lb.toml" in text and "Traceback" not in text
    assert KEY not in text and KEY[:8] not in text and KEY[-8:] not in text


@pytest.mark.parametrize("value", ['"0011223344556677"', '"zz112233445566778899aabbccddeeff"',
                                   "0x00112233445566778899aabbccddeeff", '["00112233"]'],
                         ids=["short", "not-hex", "unquoted", "array"])
def test_a_bad_fallback_hash_key_is_named_and_not_shown(tmp_path, capsys, value):
    toml = GOOD_TOML.replace("[health]", f"[fallback]\nhash_key = {value}\n[health]")
    code, text = check(tmp_path, capsys, GOOD_CONF, toml)
    assert code == 1 and "lb.toml" in text and "Traceback" not in text
    assert "fallback.hash_key = (hidden): " in text
    assert ("must be 32 hex digits" if value.startswith('"') else "expected a string") in text
    assert "00112233" not in text and "zz1122" not in text


def test_a_fallback_hash_key_is_described_as_set_never_shown(tmp_path):
    from pesigitg.routing.route_config import load_route_config

    secret = "8f3a0c6e1d2b4f5a697887a6b5c4d3e2"
    (tmp_path / "lb.toml").write_text(
        GOOD_TOML.replace("[health]", f'[fallback]\nhash_key = "{secret}"\n[health]'))
    routes = load_route_config(tmp_path / "lb.toml")
    assert routes.hash_key == bytes.fromhex(secret)
    assert routes.describe()["fallback"]["hash_key"] == "set"
    assert secret not in repr(routes) and secret not in str(routes.describe())
    (tmp_path / "lb.toml").write_text(GOOD_TOML)
    assert load_route_config(tmp_path / "lb.toml").describe()["fallback"]["hash_key"] == "none"


@pytest.mark.parametrize("raw", ["\uff14\uff14\uff13", "4_43", "+443", " 443x", "0x1bb"],
                         ids=["full-width", "underscore", "sign", "suffix", "hex"])
def test_a_port_is_ascii_decimal_digits(tmp_path, capsys, raw):
    conf = f"interface = eth0\nport = {raw}\nroute_config = lb.toml\n"
    code, text = check(tmp_path, capsys, conf)
    assert code == 1 and f"d.conf:2: port = {raw.strip()!r}: not a decimal number" in text


@pytest.mark.parametrize("which", ["d.conf", "lb.toml"])
def test_a_file_over_1_mib_is_refused_before_it_is_parsed(tmp_path, capsys, which):
    padding = "# " + "x" * 1000 + "\n"
    conf, toml = GOOD_CONF, GOOD_TOML
    if which == "d.conf":
        conf += padding * 1100
    else:
        toml += padding * 1100
    code, text = check(tmp_path, capsys, conf, toml)
    assert code == 1
    assert f"{which}: file is 1.1 MiB, larger than the 1 MiB a configuration may be" in text


def test_more_ports_than_the_xdp_program_steers_are_refused(tmp_path, capsys):
    ports = "".join(f"port = {p}\n" for p in range(1000, 1065))
    code, text = check(tmp_path, capsys, f"interface = eth0\n{ports}route_config = lb.toml\n")
    assert code == 1 and "d.conf: port: 65 ports, more than the 64 the XDP program steers" in text
    code, text = check(tmp_path, capsys, GOOD_CONF, GOOD_TOML,
                       *[f"-p{p}" for p in range(2000, 2065)])
    assert code == 1 and "65 ports, more than the 64" in text


def test_more_vips_than_the_xdp_program_holds_are_refused(tmp_path, capsys):
    vips = ", ".join(f'"10.1.{i // 250}.{i % 250 + 1}"' for i in range(257))
    code, text = check(tmp_path, capsys, GOOD_CONF,
                       GOOD_TOML.replace('vips = ["198.51.100.1"]', f"vips = [{vips}]"))
    assert code == 1
    assert "lb.toml: vips: 257 IPv4 VIPs, more than the 256 the XDP program holds" in text


CONFIG = "[[configs]]\nconfig_id = 0\nserver_id_length = 3\nnonce_length = 4\n"


@pytest.mark.parametrize(("toml", "message"), [
    ("[health]\ninterval_ms = 500\n[[health]]\n" + CONFIG, "lb.toml:3: TOML syntax error"),
    ("a = " + "[" * 3000 + "]" * 3000 + "\n", "lb.toml: TOML nested too deeply"),
    ("configs = 5\n", "configs: at least one [[configs]] table is required"),
    (CONFIG + "servers = 1\n", "configs[0].servers: expected [[configs.servers]] tables"),
    ("health = [1]\n" + CONFIG, "lb.toml: health = [1]: expected a table, got list"),
    ('vips = "198.51.100.1"\n' + CONFIG, "vips = '198.51.100.1': expected a list of"),
    ("fallback = { table_size = 5003.5 }\n" + CONFIG,
     "fallback.table_size = 5003.5: expected an integer"),
], ids=["table-then-array", "deep", "scalar-configs", "scalar-servers", "array-health",
        "string-vips", "float"])
def test_odd_structures_are_configuration_errors_not_tracebacks(tmp_path, capsys, toml, message):
    code, text = check(tmp_path, capsys, GOOD_CONF, toml)
    assert code == 1 and message in text and "Traceback" not in text


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(GOOD_TOML) - 1),
                          st.sampled_from(list("[]{}=\"'.,#\n 0x-_:aZ9")) | st.text(max_size=3)),
                min_size=1, max_size=6))
def test_any_mangled_route_config_is_valid_or_a_configuration_error(tmp_path, edits):
    text = GOOD_TOML
    for position, insert in edits:
        text = text[:position] + insert + text[position + 1:]
    path = tmp_path / "lb.toml"
    path.write_text(text)
    try:
        load_route_config(path)
    except ConfigError as exc:
        assert KEY not in str(exc)
