"""The route config (``lb.toml``): QUIC-LB configs, their servers, health, fallback, VIPs.

Validation is complete before anything is applied: every error is a
:class:`ConfigError` naming the file, the key path (``configs[1].servers[0].id``)
and the value, except key material, which is never echoed.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pesigitg._fastpath import (
    CID_CONFIGS,
    FLOW_ENTRIES_MAX,
    MAGLEV_MAX,
    MAX_VIPS,
    NONCE_MAX,
    NONCE_MIN,
    SERVER_ID_MAX,
    SERVER_ID_MIN,
)
from pesigitg.configfile import read_config_file
from pesigitg.errors import ConfigError
from pesigitg.routing.maglev import DEFAULT_MAGLEV_SIZE, is_prime
from pesigitg.routing.quiclb import CidConfig
from pesigitg.routing.retry import RETRY_MODES, RetryKey, RetrySpec

__all__ = ["HealthSpec", "RouteConfig", "ServerSpec", "load_route_config",
           "parse_mac"]

MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
HEX = re.compile(r"^[0-9A-Fa-f]*$")

TOP_KEYS = {"configs", "health", "fallback", "pmtu", "retry", "vips"}
CONFIG_KEYS = {"config_id", "server_id_length", "nonce_length", "key",
               "first_octet_encodes_cid_length", "servers", "max_key_age_days"}
MAX_KEY_AGE_DAYS = 36500
SERVER_KEYS = {"id", "address", "mac", "draining"}
HEALTH_KEYS = {"enabled", "interval_ms", "timeout_ms", "rise", "fall", "port"}
FALLBACK_KEYS = {"table_size", "flow_table_size", "hash_key"}
PMTU_KEYS = {"fanout_per_second"}
RETRY_KEYS = {"mode", "token_lifetime_s", "load_trigger", "transition_ms", "keys",
              "max_key_age_days"}
RETRY_KEY_KEYS = {"sequence", "key", "iv"}
DEFAULT_FLOW_TABLE_SIZE = 262144        # per worker: 4 MiB
DEFAULT_FANOUT_PER_SECOND = 100


def parse_mac(text: str) -> bytes:
    if not MAC.match(text):
        raise ValueError(f"{text!r} is not a MAC address (six hex octets, ':' separated)")
    return bytes.fromhex(re.sub("[:-]", "", text))


@dataclass(frozen=True)
class ServerSpec:
    config_id: int
    server_id: bytes
    address: str            # normalised IP address: the backend's identity
    mac: bytes | None
    draining: bool


@dataclass(frozen=True)
class HealthSpec:
    enabled: bool = True
    interval_ms: int = 1000
    timeout_ms: int = 500
    rise: int = 2
    fall: int = 3
    port: int | None = None     # None: the daemon's first steered port


@dataclass(frozen=True)
class RouteConfig:
    path: Path
    configs: tuple[CidConfig, ...]
    servers: tuple[ServerSpec, ...]
    health: HealthSpec = HealthSpec()
    table_size: int = DEFAULT_MAGLEV_SIZE
    vips: tuple[str, ...] = ()
    addresses: tuple[str, ...] = field(default=())   # backends, in first-seen order
    flow_table_size: int = DEFAULT_FLOW_TABLE_SIZE   # each worker's; 0: no flow table
    fanout_per_second: int = DEFAULT_FANOUT_PER_SECOND   # each worker's; 0: never
    retry: RetrySpec = field(default_factory=RetrySpec)
    max_key_age_days: dict[int, int] = field(default_factory=dict)   # config id -> days
    hash_key: bytes | None = field(default=None, repr=False)    # keys the fallback's hash

    def backend_mac(self, address: str) -> bytes | None:
        return next((s.mac for s in self.servers if s.address == address and s.mac), None)

    def backend_draining(self, address: str) -> bool:
        return any(s.draining for s in self.servers if s.address == address)

    def describe(self) -> dict[str, Any]:
        """For /config and SIGUSR2: everything but key material."""
        return {
            "path": str(self.path),
            "configs": [{"config_id": c.config_id, "mode": c.mode,
                         "server_id_length": c.server_id_len, "nonce_length": c.nonce_len,
                         "first_octet_encodes_cid_length": c.encode_length,
                         "key": "set" if c.key is not None else "none",
                         "max_key_age_days": self.max_key_age_days.get(c.config_id)}
                        for c in self.configs],
            "health": asdict(self.health),
            "fallback": {"table_size": self.table_size,
                         "flow_table_size": self.flow_table_size,
                         "hash_key": "set" if self.hash_key is not None else "none"},
            "pmtu": {"fanout_per_second": self.fanout_per_second},
            "retry": self.retry.describe(),
            "vips": list(self.vips),
        }


class _Checker:
    def __init__(self, path: Path) -> None:
        self.file = str(path)

    def fail(self, key: str, message: str, value: object = None, secret: bool = False
             ) -> ConfigError:
        return ConfigError(message, file=self.file, key=key, value=value, secret=secret)

    def table(self, data: object, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"expected a table, got {type(data).__name__}", data)
        unknown = sorted(set(data) - allowed)
        if unknown:
            # A name that looks like a value (key material pasted as a key) is not echoed.
            name = unknown[0] if re.fullmatch(r"[A-Za-z_][A-Za-z_-]{0,31}", unknown[0]) \
                else "(a key that looks like a value)"
            raise self.fail(f"{key}.{name}" if key else name,
                            f"unknown key (known: {', '.join(sorted(allowed))})")
        return data

    def integer(self, data: dict[str, Any], key: str, name: str, low: int, high: int,
                default: int | None = None) -> int:
        if name not in data:
            if default is None:
                raise self.fail(f"{key}.{name}", "missing (required)")
            return default
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key}.{name}", "expected an integer", value)
        if not low <= value <= high:
            raise self.fail(f"{key}.{name}", f"must be between {low} and {high}", value)
        return value

    def boolean(self, data: dict[str, Any], key: str, name: str, default: bool) -> bool:
        value = data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}", "expected true or false", value)
        return value

    def string(self, data: dict[str, Any], key: str, name: str, secret: bool = False) -> str:
        if name not in data:
            raise self.fail(f"{key}.{name}", "missing (required)")
        value = data[name]
        if not isinstance(value, str):
            raise self.fail(f"{key}.{name}", "expected a string", value, secret)
        return value

    def secret_hex(self, data: dict[str, Any], key: str, name: str, octets: int,
                   what: str) -> bytes:
        """Key material: ``octets`` octets in hex; an error never shows the value."""
        text = self.string(data, key, name, secret=True)
        if len(text) != 2 * octets or not HEX.match(text):
            raise self.fail(f"{key}.{name}", f"must be {2 * octets} hex digits ({what})",
                            text, secret=True)
        return bytes.fromhex(text)

    def address(self, text: str, key: str) -> str:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise self.fail(key, "not an IPv4 or IPv6 address", text) from None


_LOCATION = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)\s*$")


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """TOML to a dict; a syntax error says where and what, never quoting the text (an
    unquoted key would otherwise be echoed into logs)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _LOCATION.search(message)
        line = column = None
        if where is not None:
            message = message[:where.start()]
            if where.group(1):
                line, column = int(where.group(1)), int(where.group(2))
            else:
                line = text.count("\n") + 1
        raise ConfigError(f"TOML syntax error{f' at column {column}' if column else ''}: "
                          f"{_without_quotes(message)}", file=str(path), line=line) from None
    except RecursionError:
        raise ConfigError("TOML nested too deeply", file=str(path)) from None


def _without_quotes(message: str) -> str:
    # Keep the parser's words, drop what it quotes: quoted text longer than one
    # character and parenthesised parts ("Cannot declare ('8f95...',) twice").
    message = re.sub(r"\([^)]*\)", "", message)
    message = re.sub(r"'[^']{2,}'|\"[^\"]{2,}\"", "", message)
    message = re.sub(r"\s+", " ", message).strip()
    # Anything left that looks like a value (a long run of letters and digits) goes too.
    if re.search(r"[0-9A-Za-z]*[0-9][0-9A-Za-z]{7,}", message) or not message:
        return "invalid TOML"
    return message.rstrip(".")


def load_route_config(path: Path) -> RouteConfig:
    check = _Checker(path)
    data = parse_toml(read_config_file(path), path)
    check.table(data, "", TOP_KEYS)

    configs: list[CidConfig] = []
    servers: list[ServerSpec] = []
    max_age: dict[int, int] = {}
    raw_configs = data.get("configs", [])
    if not isinstance(raw_configs, list) or not raw_configs:
        raise check.fail("configs", "at least one [[configs]] table is required")
    seen_ids: dict[int, str] = {}
    for i, raw in enumerate(raw_configs):
        key = f"configs[{i}]"
        c = check.table(raw, key, CONFIG_KEYS)
        config_id = check.integer(c, key, "config_id", 0, CID_CONFIGS - 1)
        if config_id in seen_ids:
            raise check.fail(f"{key}.config_id", f"duplicate of {seen_ids[config_id]}",
                             config_id)
        seen_ids[config_id] = f"{key}.config_id"
        sid_len = check.integer(c, key, "server_id_length", SERVER_ID_MIN, SERVER_ID_MAX)
        nonce_len = check.integer(c, key, "nonce_length", NONCE_MIN, NONCE_MAX)
        secret = None
        if "key" in c:
            secret = check.secret_hex(c, key, "key", 16, "a 16-octet AES key")
        encode = check.boolean(c, key, "first_octet_encodes_cid_length", False)
        if "max_key_age_days" in c:
            max_age[config_id] = check.integer(c, key, "max_key_age_days", 1,
                                               MAX_KEY_AGE_DAYS)
        try:
            config = CidConfig(config_id, sid_len, nonce_len, secret, encode)
        except ValueError as exc:
            raise check.fail(key, str(exc)) from None
        configs.append(config)
        raw_servers = c.get("servers", [])
        if not isinstance(raw_servers, list):
            raise check.fail(f"{key}.servers", "expected [[configs.servers]] tables")
        seen_sids: dict[bytes, str] = {}
        for j, raw_server in enumerate(raw_servers):
            skey = f"{key}.servers[{j}]"
            s = check.table(raw_server, skey, SERVER_KEYS)
            sid_text = check.string(s, skey, "id")
            if not HEX.match(sid_text) or len(sid_text) % 2:
                raise check.fail(f"{skey}.id", "not hex octets", sid_text)
            sid = bytes.fromhex(sid_text)
            if len(sid) != sid_len:
                raise check.fail(f"{skey}.id", f"is {len(sid)} octets, server_id_length is "
                                 f"{sid_len}", sid_text)
            if sid in seen_sids:
                raise check.fail(f"{skey}.id", f"duplicate of {seen_sids[sid]}", sid_text)
            seen_sids[sid] = f"{skey}.id"
            address = check.address(check.string(s, skey, "address"), f"{skey}.address")
            mac = None
            if "mac" in s:
                text = check.string(s, skey, "mac")
                try:
                    mac = parse_mac(text)
                except ValueError:
                    raise check.fail(f"{skey}.mac", "not a MAC address (aa:bb:cc:dd:ee:ff)",
                                     text) from None
            draining = check.boolean(s, skey, "draining", False)
            servers.append(ServerSpec(config_id, sid, address, mac, draining))

    addresses = tuple(dict.fromkeys(s.address for s in servers))
    for address in addresses:
        macs = {s.mac for s in servers if s.address == address and s.mac is not None}
        if len(macs) > 1:
            raise check.fail("configs", f"backend {address} is given different MACs: "
                             + ", ".join(sorted(m.hex(":") for m in macs)))

    h = check.table(data.get("health", {}), "health", HEALTH_KEYS)
    health = HealthSpec(
        enabled=check.boolean(h, "health", "enabled", True),
        interval_ms=check.integer(h, "health", "interval_ms", 10, 3_600_000, 1000),
        timeout_ms=check.integer(h, "health", "timeout_ms", 1, 3_600_000, 500),
        rise=check.integer(h, "health", "rise", 1, 100, 2),
        fall=check.integer(h, "health", "fall", 1, 100, 3),
        port=check.integer(h, "health", "port", 1, 65535) if "port" in h else None)
    if health.timeout_ms > health.interval_ms:
        raise check.fail("health.timeout_ms", f"must not exceed interval_ms "
                         f"({health.interval_ms})", health.timeout_ms)

    fb = check.table(data.get("fallback", {}), "fallback", FALLBACK_KEYS)
    table_size = check.integer(fb, "fallback", "table_size", 3, MAGLEV_MAX,
                               DEFAULT_MAGLEV_SIZE)
    if not is_prime(table_size):
        raise check.fail("fallback.table_size", "must be a prime (Maglev)", table_size)
    if table_size <= len(addresses):
        raise check.fail("fallback.table_size", f"must exceed the number of backends "
                         f"({len(addresses)})", table_size)
    flow_table_size = check.integer(fb, "fallback", "flow_table_size", 0, FLOW_ENTRIES_MAX,
                                    DEFAULT_FLOW_TABLE_SIZE)
    hash_key = check.secret_hex(fb, "fallback", "hash_key", 16, "a 16-octet SipHash key") \
        if "hash_key" in fb else None
    # Path MTU discovery: a Packet Too Big that names no server goes to every backend.
    pmtu = check.table(data.get("pmtu", {}), "pmtu", PMTU_KEYS)
    fanout = check.integer(pmtu, "pmtu", "fanout_per_second", 0, 1_000_000,
                           DEFAULT_FANOUT_PER_SECOND)

    raw_vips = data.get("vips", [])
    if not isinstance(raw_vips, list):
        raise check.fail("vips", "expected a list of addresses", raw_vips)
    vips = []
    for k, vip in enumerate(raw_vips):
        if not isinstance(vip, str):
            raise check.fail(f"vips[{k}]", "expected a string", vip)
        vips.append(check.address(vip, f"vips[{k}]"))
    for family in (4, 6):
        count = sum(ipaddress.ip_address(v).version == family for v in set(vips))
        if count > MAX_VIPS:
            raise check.fail("vips", f"{count} IPv{family} VIPs, more than the {MAX_VIPS} "
                             "the XDP program holds")
    return RouteConfig(path, tuple(configs), tuple(servers), health, table_size,
                       tuple(dict.fromkeys(vips)), addresses, flow_table_size, fanout,
                       _retry(check, data.get("retry", {})), max_age, hash_key)


def _retry(check: _Checker, data: object) -> RetrySpec:
    r = check.table(data, "retry", RETRY_KEYS)
    mode = r.get("mode", "off")
    if mode not in RETRY_MODES:
        raise check.fail("retry.mode", f"must be one of {', '.join(RETRY_MODES)}", mode)
    lifetime = check.integer(r, "retry", "token_lifetime_s", 1, 3600, 10)
    transition = check.integer(r, "retry", "transition_ms", 0, 60_000, 200)
    trigger = check.integer(r, "retry", "load_trigger", 1, 100_000_000,
                            None if mode == "load" else 0)
    raw_keys = r.get("keys", [])
    if not isinstance(raw_keys, list):
        raise check.fail("retry.keys", "expected [[retry.keys]] tables")
    keys: list[RetryKey] = []
    seen: dict[int, str] = {}
    for i, raw in enumerate(raw_keys):
        key = f"retry.keys[{i}]"
        k = check.table(raw, key, RETRY_KEY_KEYS)
        sequence = check.integer(k, key, "sequence", 0, 127)
        if sequence in seen:
            raise check.fail(f"{key}.sequence", f"duplicate of {seen[sequence]}", sequence)
        seen[sequence] = f"{key}.sequence"
        keys.append(RetryKey(sequence, check.secret_hex(k, key, "key", 16,
                                                        "a 16-octet AES-128-GCM key"),
                             check.secret_hex(k, key, "iv", 12, "a 12-octet IV")))
    if mode != "off" and not keys:
        raise check.fail("retry.keys", f"mode {mode!r} needs at least one [[retry.keys]]")
    max_age = check.integer(r, "retry", "max_key_age_days", 1, MAX_KEY_AGE_DAYS) \
        if "max_key_age_days" in r else None
    return RetrySpec(mode, lifetime, trigger, transition, tuple(keys), max_age)
