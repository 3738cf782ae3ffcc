"""lb.toml's keys, one row each: where the key is, how its value is checked, its default
and what it means, and, for a number the packet path reads, the route table's knob it
fills (``routetable.h``'s PES_TABLE_KNOBS). The loader (route_config.py), /config, the
man page's test and ``contrib/lb.toml``'s test all read this table; nothing restates
a key or a default.

A path is dotted; ``[]`` marks an array of tables (``configs[].servers[].id``). Errors
name the key where it is (``configs[1].servers[0].id``) and its value, except key
material, which is never shown.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pesigitg._fastpath import (
    CID_CONFIGS,
    FLOW_ENTRIES_MAX,
    MAGLEV_MAX,
    NONCE_MAX,
    NONCE_MIN,
    RETRY_KEYS,
    RETRY_MODES,
    SERVER_ID_MAX,
    SERVER_ID_MIN,
    TABLE_KNOBS,
)
from pesigitg.errors import ConfigError
from pesigitg.routing.maglev import DEFAULT_MAGLEV_SIZE, is_prime

__all__ = ["KEYS", "REQUIRED", "Checker", "Key", "default", "walk"]

REQUIRED: Any = object()                # a key without a default must be given
MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
HEX = re.compile(r"^[0-9A-Fa-f]*$")
MAX_KEY_AGE_DAYS = 36500


class Checker:
    """Errors that name the file, the key and the value (or hide it)."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str, value: object = None, secret: bool = False
             ) -> ConfigError:
        return ConfigError(message, file=self.file, key=key, value=value, secret=secret)


Check = Callable[[Checker, Any, str], Any]


def integer(low: int, high: int, prime: bool = False) -> Check:
    def check(c: Checker, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise c.fail(key, "expected an integer", value)
        if not low <= value <= high:
            raise c.fail(key, f"must be between {low} and {high}", value)
        if prime and not is_prime(value):
            raise c.fail(key, "must be a prime (Maglev)", value)
        return value
    return check


def boolean(c: Checker, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise c.fail(key, "expected true or false", value)
    return value


def string(c: Checker, value: Any, key: str, secret: bool = False) -> str:
    if not isinstance(value, str):
        raise c.fail(key, "expected a string", value, secret)
    return value


def choice(names: tuple[str, ...]) -> Check:
    def check(c: Checker, value: Any, key: str) -> str:
        if value not in names:
            raise c.fail(key, f"must be one of {', '.join(names)}", value)
        return str(value)
    return check


def secret_hex(octets: int, what: str) -> Check:
    """Key material: ``octets`` octets in hex; an error never shows the value."""
    def check(c: Checker, value: Any, key: str) -> bytes:
        text = string(c, value, key, secret=True)
        if len(text) != 2 * octets or not HEX.match(text):
            raise c.fail(key, f"must be {2 * octets} hex digits ({what})", text, secret=True)
        return bytes.fromhex(text)
    return check


def hex_octets(c: Checker, value: Any, key: str) -> bytes:
    text = string(c, value, key)
    if not HEX.match(text) or len(text) % 2:
        raise c.fail(key, "not hex octets", text)
    return bytes.fromhex(text)


def address(c: Checker, value: Any, key: str) -> str:
    try:
        return str(ipaddress.ip_address(string(c, value, key)))
    except ValueError:
        raise c.fail(key, "not an IPv4 or IPv6 address", value) from None


def addresses(c: Checker, value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise c.fail(key, "expected a list of addresses", value)
    return tuple(dict.fromkeys(address(c, v, f"{key}[{k}]") for k, v in enumerate(value)))


def mac(c: Checker, value: Any, key: str) -> bytes:
    text = string(c, value, key)
    if not MAC.match(text):
        raise c.fail(key, "not a MAC address (aa:bb:cc:dd:ee:ff)", text)
    return bytes.fromhex(re.sub("[:-]", "", text))


@dataclass(frozen=True)
class Key:
    path: str
    check: Check
    default: Any
    doc: str
    knob: str | None = None     # the route table's knob (TABLE_KNOBS) it fills
    secret: bool = False        # key material: described as "set" or "none" only


KEYS: tuple[Key, ...] = (
    Key("vips", addresses, (), "VIPs: steer only datagrams to these addresses (none: "
        "any); a Packet Too Big is copied to every backend only about a packet sent from "
        "one of them"),
    Key("configs[].config_id", integer(0, CID_CONFIGS - 1), REQUIRED,
        "QUIC-LB config id, the CID's first three bits"),
    Key("configs[].server_id_length", integer(SERVER_ID_MIN, SERVER_ID_MAX), REQUIRED,
        "server ID octets"),
    Key("configs[].nonce_length", integer(NONCE_MIN, NONCE_MAX), REQUIRED, "nonce octets"),
    Key("configs[].key", secret_hex(16, "a 16-octet AES key"), None,
        "AES-128 key: single-pass or four-pass; none: plaintext", secret=True),
    Key("configs[].first_octet_encodes_cid_length", boolean, False,
        "the first octet's low bits say the CID's length"),
    Key("configs[].max_key_age_days", integer(1, MAX_KEY_AGE_DAYS), None,
        "warn once the key is older"),
    Key("configs[].servers[].id", hex_octets, REQUIRED, "server ID, hex"),
    Key("configs[].servers[].address", address, REQUIRED, "the backend's address"),
    Key("configs[].servers[].mac", mac, None, "the backend's MAC (default: ARP/NDP)"),
    Key("configs[].servers[].draining", boolean, False,
        "keeps its connections, gets no new ones"),
    Key("health.enabled", boolean, True, "probe backends"),
    Key("health.interval_ms", integer(10, 3_600_000), 1000, "between probes"),
    Key("health.timeout_ms", integer(1, 3_600_000), 500, "a probe's wait, <= interval_ms"),
    Key("health.rise", integer(1, 100), 2, "good probes that bring a backend up"),
    Key("health.fall", integer(1, 100), 3, "failed probes that take it down"),
    Key("health.port", integer(1, 65535), None, "probe port (default: the first steered)"),
    Key("fallback.table_size", integer(3, MAGLEV_MAX, prime=True), DEFAULT_MAGLEV_SIZE,
        "Maglev slots, a prime above the number of backends"),
    Key("fallback.flow_table_size", integer(0, FLOW_ENTRIES_MAX), 262144,
        "each worker's flow table, entries (0: none)", knob="flow_entries"),
    Key("fallback.hash_key", secret_hex(16, "a 16-octet SipHash key"), None,
        "keys the fallback's hash (the same on every balancer)", secret=True),
    Key("pmtu.fanout_per_second", integer(0, 1_000_000), 100,
        "Packets Too Big copied to every backend per second and worker",
        knob="icmp_fanout_rate"),
    Key("retry.mode", choice(RETRY_MODES), "off", "the Retry offload: off, always, load",
        knob="retry_mode"),
    Key("retry.token_lifetime_s", integer(1, 3600), 10, "how long its tokens live",
        knob="retry_lifetime_s"),
    Key("retry.load_trigger", integer(1, 100_000_000), 0,
        "mode load: Initials a second per worker (required then)", knob="retry_trigger"),
    Key("retry.transition_ms", integer(0, 60_000), 200,
        "Retry and forward for this long while becoming active",
        knob="retry_transition_ms"),
    Key("retry.max_key_age_days", integer(1, MAX_KEY_AGE_DAYS), None,
        "warn once a token key is older"),
    Key("retry.keys[].sequence", integer(0, RETRY_KEYS - 1), REQUIRED,
        "the key's number in tokens; the highest seals"),
    Key("retry.keys[].key", secret_hex(16, "a 16-octet AES-128-GCM key"), REQUIRED,
        "token key", secret=True),
    Key("retry.keys[].iv", secret_hex(12, "a 12-octet IV"), REQUIRED, "token IV",
        secret=True),
)
_BY_PATH = {k.path: k for k in KEYS}
assert sorted(k.knob for k in KEYS if k.knob) == sorted(TABLE_KNOBS), "a knob without a key"


def default(path: str) -> Any:
    """The default of the key at ``path``."""
    return _BY_PATH[path].default


def _children(prefix: str) -> dict[str, str]:
    """Names under ``prefix``: "key", "table" or "array" (of tables)."""
    out: dict[str, str] = {}
    for key in KEYS:
        if key.path.startswith(prefix):
            head, dot, _ = key.path[len(prefix):].partition(".")
            kind = "array" if head.endswith("[]") else "table" if dot else "key"
            out.setdefault(head.removesuffix("[]"), kind)
    return out


def _table(c: Checker, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise c.fail(where, f"expected a table, got {type(data).__name__}", data)
    return data


def walk(c: Checker, data: Any, prefix: str = "", where: str = "") -> dict[str, Any]:
    """The checked values of the table ``data`` at schema ``prefix`` (named ``where``
    in errors), defaults filled in, sub-tables and arrays of tables walked."""
    data = _table(c, data, where)
    children = _children(prefix)
    unknown = sorted(set(data) - set(children))
    if unknown:
        # A name that looks like a value (key material pasted as a key) is not echoed.
        name = unknown[0] if re.fullmatch(r"[A-Za-z_][A-Za-z_-]{0,31}", unknown[0]) \
            else "(a key that looks like a value)"
        raise c.fail(f"{where}.{name}" if where else name,
                     f"unknown key (known: {', '.join(sorted(children))})")
    out: dict[str, Any] = {}
    for name, kind in children.items():
        here = f"{where}.{name}" if where else name
        if kind == "table":
            out[name] = walk(c, data.get(name, {}), f"{prefix}{name}.", here)
        elif kind == "array":
            items = data.get(name, [])
            if not isinstance(items, list):
                raise c.fail(here, f"expected [[{prefix.replace('[]', '')}{name}]] tables")
            out[name] = [walk(c, item, f"{prefix}{name}[].", f"{here}[{i}]")
                         for i, item in enumerate(items)]
        else:
            row = _BY_PATH[prefix + name]
            if name in data:
                out[name] = row.check(c, data[name], here)
            elif row.default is REQUIRED:
                raise c.fail(here, "missing (required)")
            else:
                out[name] = row.default
    return out


def describe(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``tree`` (from :func:`walk`) for /config: key material as "set" or "none"."""
    out: dict[str, Any] = {}
    for name, value in tree.items():
        kind = _children(prefix).get(name)
        if kind == "table":
            out[name] = describe(value, f"{prefix}{name}.")
        elif kind == "array":
            out[name] = [describe(item, f"{prefix}{name}[].") for item in value]
        elif _BY_PATH[prefix + name].secret:
            out[name] = "set" if value is not None else "none"
        else:
            out[name] = list(value) if isinstance(value, tuple) else \
                value.hex(":") if isinstance(value, bytes) and name == "mac" else \
                value.hex() if isinstance(value, bytes) else value
    return out
