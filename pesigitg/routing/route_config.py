"""The route config (``lb.toml``): QUIC-LB configs, their servers, health, fallback, VIPs,
the Retry offload.

Every key is a row of ``lbtoml.KEYS`` (its check, default and meaning); this module
reads the file against those rows, checks what spans keys once (uniqueness, one MAC per
backend, timeouts against intervals, capacities), and builds the model the rest of
pesigitg uses. Validation is complete before anything is applied: every error is a
:class:`ConfigError` naming the file, the key path (``configs[1].servers[0].id``) and
the value, except key material, which is never echoed.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pesigitg._fastpath import MAX_VIPS, RETRY_MODES
from pesigitg.configfile import read_config_file
from pesigitg.errors import ConfigError
from pesigitg.routing import lbtoml
from pesigitg.routing.lbtoml import Checker
from pesigitg.routing.maglev import DEFAULT_MAGLEV_SIZE
from pesigitg.routing.quiclb import CidConfig

__all__ = ["HealthSpec", "RetryKey", "RetrySpec", "RouteConfig", "ServerSpec", "TableOptions",
           "load_route_config"]


@dataclass(frozen=True)
class ServerSpec:
    config_id: int
    server_id: bytes
    address: str            # normalised IP address: the backend's identity
    mac: bytes | None
    draining: bool


@dataclass(frozen=True)
class HealthSpec:
    enabled: bool
    interval_ms: int
    timeout_ms: int
    rise: int
    fall: int
    port: int | None            # None: the daemon's first steered port

    @classmethod
    def default(cls) -> HealthSpec:
        """``[health]`` when lb.toml has none."""
        return cls(**lbtoml.walk(Checker("defaults"), {}, "health."))


@dataclass(frozen=True)
class RetryKey:
    """Token key number ``sequence`` (0..127): a 16-octet AES-128-GCM key and a
    12-octet IV."""
    sequence: int
    key: bytes
    iv: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= 127:
            raise ValueError(f"key sequence {self.sequence} is outside 0..127")
        if len(self.key) != 16 or len(self.iv) != 12:
            raise ValueError("a token key is 16 octets and its IV 12")

    def __repr__(self) -> str:         # never the key material
        return f"RetryKey(sequence={self.sequence})"


@dataclass(frozen=True)
class RetrySpec:
    """lb.toml's ``[retry]``: when the balancer answers tokenless Initials with Retries
    (``mode``: off, always, or load: above ``load_trigger`` Initials a second per
    worker, through ``transition_ms`` of Retry-and-forward), how long its tokens live,
    and the shared token keys."""
    mode: str
    token_lifetime_s: int
    load_trigger: int
    transition_ms: int
    keys: tuple[RetryKey, ...] = ()
    max_key_age_days: int | None = None

    @classmethod
    def off(cls) -> RetrySpec:
        return cls(**{**lbtoml.walk(Checker("defaults"), {}, "retry."), "keys": ()})

    def knobs(self) -> dict[str, int]:
        """The route table's knobs of [retry] (its fields are lb.toml's names)."""
        return _knobs({"retry": {f.name: getattr(self, f.name) for f in fields(self)}})


def _knobs(tree: dict[str, Any]) -> dict[str, int]:
    """The knobs of lbtoml.KEYS whose section ``tree`` holds, with their values."""
    out = {}
    for key in lbtoml.KEYS:
        section, _, name = key.path.partition(".")
        if key.knob is not None and section in tree:
            value = tree[section][name]
            out[key.knob] = RETRY_MODES.index(value) if isinstance(value, str) else int(value)
    return out


@dataclass(frozen=True)
class TableOptions:
    """What a route table holds besides its backends and servers: the Maglev size, the
    knobs (``TABLE_KNOBS``: lb.toml numbers the packet path reads), the Retry offload's
    keys, the fallback's hash key, the VIPs. ``RouteConfig.table_options()`` makes one
    from lb.toml; tests make their own."""
    maglev_size: int = DEFAULT_MAGLEV_SIZE
    knobs: Mapping[str, int] = field(default_factory=dict)
    retry_keys: tuple[RetryKey, ...] = ()
    hash_key: bytes | None = field(default=None, repr=False)
    vips: Sequence[str] = ()


@dataclass(frozen=True)
class RouteConfig:
    path: Path
    configs: tuple[CidConfig, ...]
    servers: tuple[ServerSpec, ...]
    health: HealthSpec
    retry: RetrySpec
    tree: dict[str, Any] = field(repr=False)        # every key's checked value

    @property
    def addresses(self) -> tuple[str, ...]:
        """The backends, in first-seen order."""
        return tuple(dict.fromkeys(s.address for s in self.servers))

    @property
    def vips(self) -> tuple[str, ...]:
        return tuple(self.tree["vips"])

    @property
    def table_size(self) -> int:
        return int(self.tree["fallback"]["table_size"])

    @property
    def hash_key(self) -> bytes | None:
        key = self.tree["fallback"]["hash_key"]
        return bytes(key) if key is not None else None

    @property
    def max_key_age_days(self) -> dict[int, int]:
        """Config id -> days, for the configs that set one."""
        return {c["config_id"]: c["max_key_age_days"] for c in self.tree["configs"]
                if c["max_key_age_days"] is not None}

    def backend_mac(self, address: str) -> bytes | None:
        return next((s.mac for s in self.servers if s.address == address and s.mac), None)

    def backend_draining(self, address: str) -> bool:
        return any(s.draining for s in self.servers if s.address == address)

    def knobs(self) -> dict[str, int]:
        """The route table's knobs, each from its lb.toml key (lbtoml.KEYS)."""
        return _knobs(self.tree)

    def table_options(self) -> TableOptions:
        """What the route table holds besides backends and servers."""
        return TableOptions(self.table_size, self.knobs(), self.retry.keys
                            if self.retry.mode != "off" else (), self.hash_key, self.vips)

    def describe(self) -> dict[str, Any]:
        """For /config and SIGUSR2: every key, key material only as set or none."""
        out = {"path": str(self.path), **lbtoml.describe(self.tree)}
        for config, shown in zip(self.configs, out["configs"], strict=True):
            shown.pop("servers")                # /config lists the servers on their own
            shown["mode"] = config.mode
        return out


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
    check = Checker(str(path))
    data = parse_toml(read_config_file(path), path)
    if not isinstance(data.get("configs"), list) or not data["configs"]:
        raise check.fail("configs", "at least one [[configs]] table is required")
    tree = lbtoml.walk(check, data)
    configs, servers = _configs(check, tree["configs"])
    _check_backends(check, servers, tree)
    return RouteConfig(path, configs, servers, HealthSpec(**tree["health"]),
                       _retry(check, tree["retry"]), tree)


def _unique(check: Checker, items: list[tuple[object, str]]) -> None:
    """Each value once: the second names the first (``configs[1].config_id``)."""
    seen: dict[object, str] = {}
    for value, where in items:
        if value in seen:
            shown = value.hex() if isinstance(value, bytes) else value
            raise check.fail(where, f"duplicate of {seen[value]}", shown)
        seen[value] = where


def _configs(check: Checker, raw: list[dict[str, Any]]
             ) -> tuple[tuple[CidConfig, ...], tuple[ServerSpec, ...]]:
    configs, servers = [], []
    _unique(check, [(c["config_id"], f"configs[{i}].config_id") for i, c in enumerate(raw)])
    for i, c in enumerate(raw):
        try:
            configs.append(CidConfig(c["config_id"], c["server_id_length"], c["nonce_length"],
                                     c["key"], c["first_octet_encodes_cid_length"]))
        except ValueError as exc:
            raise check.fail(f"configs[{i}]", str(exc)) from None
        for j, s in enumerate(c["servers"]):
            if len(s["id"]) != c["server_id_length"]:
                raise check.fail(f"configs[{i}].servers[{j}].id", f"is {len(s['id'])} octets, "
                                 f"server_id_length is {c['server_id_length']}", s["id"].hex())
            servers.append(ServerSpec(c["config_id"], s["id"], s["address"], s["mac"],
                                      s["draining"]))
        _unique(check, [(s["id"], f"configs[{i}].servers[{j}].id")
                        for j, s in enumerate(c["servers"])])
    return tuple(configs), tuple(servers)


def _check_backends(check: Checker, servers: tuple[ServerSpec, ...], tree: dict[str, Any]
                    ) -> None:
    addresses = list(dict.fromkeys(s.address for s in servers))
    for address in addresses:
        macs = {s.mac for s in servers if s.address == address and s.mac is not None}
        if len(macs) > 1:
            raise check.fail("configs", f"backend {address} is given different MACs: "
                             + ", ".join(sorted(m.hex(":") for m in macs)))
    health = tree["health"]
    if health["timeout_ms"] > health["interval_ms"]:
        raise check.fail("health.timeout_ms", f"must not exceed interval_ms "
                         f"({health['interval_ms']})", health["timeout_ms"])
    table_size = tree["fallback"]["table_size"]
    if table_size <= len(addresses):
        raise check.fail("fallback.table_size", f"must exceed the number of backends "
                         f"({len(addresses)})", table_size)
    for family in (4, 6):
        count = sum(ipaddress.ip_address(v).version == family for v in tree["vips"])
        if count > MAX_VIPS:
            raise check.fail("vips", f"{count} IPv{family} VIPs, more than the {MAX_VIPS} "
                             "the XDP program holds")


def _retry(check: Checker, r: dict[str, Any]) -> RetrySpec:
    if r["mode"] == "load" and r["load_trigger"] == lbtoml.default("retry.load_trigger"):
        raise check.fail("retry.load_trigger", "missing (required for mode load)")
    _unique(check, [(k["sequence"], f"retry.keys[{i}].sequence")
                    for i, k in enumerate(r["keys"])])
    if r["mode"] != "off" and not r["keys"]:
        raise check.fail("retry.keys", f"mode {r['mode']!r} needs at least one [[retry.keys]]")
    keys = tuple(RetryKey(k["sequence"], k["key"], k["iv"]) for k in r["keys"])
    return RetrySpec(r["mode"], r["token_lifetime_s"], r["load_trigger"], r["transition_ms"],
                     keys, r["max_key_age_days"])
