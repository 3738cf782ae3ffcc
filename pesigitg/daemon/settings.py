"""pesigitgd's own configuration: ``key = value`` file, command line, defaults.

One table: each field of :class:`DaemonConfig` that is a setting carries its row (key,
flags, parser, help, whether a change needs the daemon stopped and started) in its
metadata, and the config file's reader, the command line (daemon/main.py), the
description in ``/config``, the reload's restart rule and the successor's command
line are all derived from :data:`SETTINGS`. Adding a setting is one field here plus
its use.

The file uses the keys below (a repeatable one may repeat), ``#`` starts a comment,
and a relative path is relative to the file. The command line wins over the file (a
repeatable flag replaces the file's values rather than adding to them), and a
relative path there is relative to the directory pesigitgd was started in: both are
made absolute as they are read, before the daemon changes directory.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pesigitg._fastpath import MAX_PORTS, XSK_SLOTS
from pesigitg.configfile import read_config_file
from pesigitg.errors import ConfigError
from pesigitg.paths import RUNTIME_DIR

__all__ = ["SETTINGS", "DaemonConfig", "Setting", "keep_restart_settings", "load_daemon_config",
           "merge", "parse_value", "to_argv"]

IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
DECIMAL = re.compile(r"^[0-9]{1,10}$")
ACCOUNT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")

Parser = Callable[[str, Callable[[str], ConfigError]], object]


# -- value parsers: (raw, fail) -> value ---------------------------------------------------

def _interface(raw: str, fail: Callable[[str], ConfigError]) -> object:
    if not IFNAME.match(raw):
        raise fail("not an interface name (1-15 of letters, digits, _ . : @ -)")
    return raw


def _number(low: int, high: int) -> Parser:
    def parse(raw: str, fail: Callable[[str], ConfigError]) -> object:
        # ASCII digits only: int() would also take full-width digits or '4_43'.
        if not DECIMAL.match(raw):
            raise fail("not a decimal number")
        if not low <= int(raw) <= high:
            raise fail(f"must be between {low} and {high}")
        return int(raw)
    return parse


def _choice(*choices: str) -> Parser:
    def parse(raw: str, fail: Callable[[str], ConfigError]) -> object:
        if raw not in choices:
            raise fail(f"must be one of {', '.join(choices)}")
        return raw
    parse.choices = choices      # type: ignore[attr-defined]
    return parse


def _account(raw: str, fail: Callable[[str], ConfigError]) -> object:
    if not ACCOUNT.match(raw):
        raise fail("not a user or group name or number")
    return raw


def _address(raw: str, fail: Callable[[str], ConfigError]) -> object:
    try:
        address = ipaddress.ip_address(raw if raw.isascii() else "")
    except ValueError:
        raise fail("not an IPv4 or IPv6 address") from None
    if address.is_multicast or address.is_unspecified or address.is_link_local \
            or address.is_loopback:
        raise fail("not a unicast address a backend can answer (multicast, unspecified, "
                   "link-local or loopback)")
    return str(address)


def _listen(raw: str, fail: Callable[[str], ConfigError]) -> object:
    """``ADDRESS:PORT`` (an IPv6 address in brackets), normalised."""
    host, sep, port = raw.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not sep or not raw.isascii() or (":" in host and not bracketed):
        raise fail("not ADDRESS:PORT (an IPv6 address in brackets: [2001:db8::1]:9464)")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise fail("not an IPv4 or IPv6 address (a name is not accepted)") from None
    if bracketed != (address.version == 6):
        raise fail("an IPv6 address goes in brackets, an IPv4 address without")
    if address.is_multicast:
        raise fail("a multicast address cannot be listened on")
    number = _number(1, 65535)(port, lambda message: fail(f"port: {message}"))
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


def _path(raw: str, fail: Callable[[str], ConfigError]) -> object:
    if not raw:
        raise fail("empty path")
    return Path(raw)


@dataclass(frozen=True)
class Setting:
    """One row of the table: ``key`` in the file (``field`` in DaemonConfig), ``flags``
    on the command line, ``parse`` for both, ``restart``: a change needs the daemon
    stopped and started (a reload or a hitless restart keeps the running value)."""
    key: str
    field: str
    flags: tuple[str, ...]
    parse: Parser
    help: str
    restart: bool = False
    repeat: bool = False
    metavar: str | None = None


def _row(default: Any, flags: tuple[str, ...], parse: Parser, help: str, *,
         key: str | None = None, restart: bool = False, repeat: bool = False,
         metavar: str | None = None) -> Any:
    return field(default=default, metadata={"setting": dict(
        key=key, flags=flags, parse=parse, help=help, restart=restart, repeat=repeat,
        metavar=metavar)})


@dataclass(frozen=True)
class DaemonConfig:
    interface: str | None = _row(None, ("-i", "--interface"), _interface, "data-plane NIC",
                                 restart=True)
    ports: tuple[int, ...] = _row((), ("-p", "--port"), _number(1, 65535),
                                  "UDP port to steer (repeatable; default 443)", key="port",
                                  repeat=True)
    queues: int | None = _row(None, ("-q", "--queues"), _number(1, XSK_SLOTS),
                              "worker processes, one per RX queue (default: the NIC's RX "
                              "queues)", restart=True)
    route_config: Path | None = _row(None, ("-r", "--route-config"), _path,
                                     "route config (lb.toml)")
    status_socket: Path | None = _row(None, ("-s", "--status-socket"), _path,
                                      "status socket (default "
                                      "/run/pesigitg/pesigitgd-IFACE.sock)", restart=True)
    pidfile: Path | None = _row(None, ("--pidfile",), _path,
                                "pidfile (default /run/pesigitg/pesigitgd-IFACE.pid)",
                                restart=True)
    xdp_mode: str = _row("native", ("--xdp-mode",), _choice("native", "generic"),
                         "native (default; falls back to generic) or generic", restart=True)
    xdp_decode: str = _row("off", ("--xdp-decode",), _choice("off", "plaintext", "all", "auto"),
                           "decode QUIC-LB CIDs and forward in the XDP program: off "
                           "(default), plaintext, all (the keyed configs too) or auto "
                           "(the rule in pesigitgd(8), KERNEL TIER)")
    syslog_socket: Path = _row(Path("/dev/log"), ("--syslog-socket",), _path,
                               "syslog socket for daemon mode (default /dev/log)")
    log_file: Path | None = _row(None, ("--log-file",), _path,
                                 "daemon mode without syslog logs here (default "
                                 "/var/log/pesigitgd-IFACE.log)")
    user: str | None = _row(None, ("--user",), _account,
                            "run as this user (started as root), keeping only "
                            "CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON and "
                            "CAP_IPC_LOCK", restart=True)
    status_group: str | None = _row(None, ("--status-group",), _account,
                                    "group of the status socket: its members may query it "
                                    "and change the daemon's state (default: the daemon's "
                                    "group)", restart=True)
    # Where health probes and neighbour solicitations leave from, at most one per
    # family; a family without one gets an interface address chosen at start.
    source_addresses: tuple[str, ...] = _row(
        (), ("--source-address",), _address, "health probes and neighbour solicitations "
        "leave from this address (one per family; default: chosen from the interface's "
        "addresses, never a VIP)", key="source_address", repeat=True)
    stats_interval: int = _row(60, ("--stats-interval",), _number(0, 86400),
                               "seconds between log lines of counter deltas while traffic "
                               "flows (default 60; 0: none)")
    log_format: str = _row("text", ("--log-format",), _choice("text", "json"),
                           "text (default) or json: one JSON object a line")
    drain_quiet_s: int = _row(60, ("--drain-quiet",), _number(1, 86400),
                              "a draining backend with no CID-routed frame this long is "
                              "fully drained (default 60)", metavar="SECONDS")
    metrics_listen: tuple[str, ...] = _row(
        (), ("--metrics-listen",), _listen, "serve GET /metrics and /health over HTTP on "
        "this TCP address (repeatable; [V6]:PORT for IPv6; default: none)",
        repeat=True, metavar="ADDRESS:PORT")
    config_file: Path | None = None

    @property
    def effective_ports(self) -> tuple[int, ...]:
        return self.ports or (443,)

    @property
    def effective_status_socket(self) -> Path:
        return self.status_socket or RUNTIME_DIR / f"pesigitgd-{self.interface}.sock"

    @property
    def effective_pidfile(self) -> Path:
        return self.pidfile or RUNTIME_DIR / f"pesigitgd-{self.interface}.pid"

    def describe(self) -> dict[str, object]:
        """Every setting as it applies (defaults filled in), for /config."""
        out: dict[str, object] = {}
        for s in (*SETTINGS, None):
            name = s.field if s is not None else "config_file"
            value = getattr(self, f"effective_{name}", getattr(self, name))
            out[name] = [str(v) if isinstance(v, Path) else v for v in value] \
                if isinstance(value, tuple) else str(value) if isinstance(value, Path) \
                else value
        return out


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(**{**f.metadata["setting"], "key": f.metadata["setting"]["key"] or f.name,
               "field": f.name})
    for f in fields(DaemonConfig) if "setting" in f.metadata)
_BY_KEY = {s.key: s for s in SETTINGS}


def parse_value(key: str, raw: str, *, file: str | None = None, line: int | None = None,
                base: Path | None = None) -> object:
    """Check and convert one setting; the same rules for the file and the flags. A
    relative path is made absolute against ``base``."""
    setting = _BY_KEY.get(key)
    if setting is None:
        raise ConfigError(f"unknown setting (known: {', '.join(_BY_KEY)})", file=file,
                          line=line, key=key)
    value = setting.parse(raw, lambda message: ConfigError(message, file=file, line=line,
                                                           key=key, value=raw))
    if isinstance(value, Path) and not value.is_absolute() and base is not None:
        return base / value
    return value


def load_daemon_config(path: Path) -> DaemonConfig:
    """Read a ``key = value`` file; every problem names the file and line."""
    path = path.absolute()
    text = read_config_file(path)
    values: dict[str, object] = {}
    seen: dict[str, int] = {}
    repeated: dict[str, list[object]] = {s.key: [] for s in SETTINGS if s.repeat}
    families: dict[int, int] = {}       # source_address: IP version -> line
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw_line).strip()
        if not line:
            continue
        key, sep, raw = line.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ConfigError(f"expected 'key = value', found {raw_line.strip()!r}",
                              file=str(path), line=number)
        if key in seen and key not in repeated:
            raise ConfigError(f"given twice (first on line {seen[key]})", file=str(path),
                              line=number, key=key, value=raw)
        seen[key] = number
        value = parse_value(key, raw, file=str(path), line=number, base=path.parent)
        if key == "source_address":
            version = ipaddress.ip_address(str(value)).version
            first = families.setdefault(version, number)
            if first != number:
                raise ConfigError(f"a second IPv{version} address (first on line {first}); "
                                  "give at most one per address family", file=str(path),
                                  line=number, key=key, value=raw)
        if key in repeated:
            repeated[key].append(value)
        else:
            values[_BY_KEY[key].field] = value
    for key, given in repeated.items():
        if given:
            values[_BY_KEY[key].field] = tuple(dict.fromkeys(given))
    config = DaemonConfig(config_file=path, **values)  # type: ignore[arg-type]
    _check_repeated(config, str(path))
    return config


def _check_repeated(config: DaemonConfig, where: str) -> None:
    if len(config.ports) > MAX_PORTS:
        raise ConfigError(f"{len(config.ports)} ports, more than the {MAX_PORTS} the XDP "
                          "program steers", file=where, key="port")
    for version in (4, 6):
        family = [a for a in config.source_addresses
                  if ipaddress.ip_address(a).version == version]
        if len(family) > 1:
            raise ConfigError(f"{len(family)} IPv{version} addresses ({', '.join(family)}); "
                              "give at most one per address family", file=where,
                              key="source_address")


def merge(file_config: DaemonConfig | None, cli: dict[str, object]) -> DaemonConfig:
    """Command-line values (already parsed, keyed by setting) over the file's, then check
    completeness."""
    config = file_config or DaemonConfig()
    changes: dict[str, Any] = {}
    for key, value in cli.items():
        if value is None or value == []:
            continue
        setting = _BY_KEY[key]
        changes[setting.field] = tuple(dict.fromkeys(value)) \
            if setting.repeat and isinstance(value, list) else value
    config = replace(config, **changes)
    where = str(config.config_file) if config.config_file else "command line"
    _check_repeated(config, where)
    if not config.interface:
        raise ConfigError("no interface given (-i IFACE or 'interface = IFACE')", file=where)
    if config.route_config is None:
        raise ConfigError("no route config given (-r FILE or 'route_config = FILE')",
                          file=where)
    return config


def to_argv(cli: dict[str, object]) -> list[str]:
    """The flags that give ``cli`` (parsed values, paths absolute) again: how a running
    daemon passes its command line to its successor."""
    argv: list[str] = []
    for setting in SETTINGS:
        value = cli.get(setting.key)
        if value is None or value == []:
            continue
        for one in value if setting.repeat else [value]:  # type: ignore[attr-defined]
            argv += [setting.flags[-1], str(one)]
    return argv


def keep_restart_settings(new: DaemonConfig, running: DaemonConfig
                          ) -> tuple[DaemonConfig, list[str]]:
    """``new`` with the running value of every setting a reload cannot change, and a
    warning for each that was changed."""
    warnings, kept = [], {}
    for setting in SETTINGS:
        old, wanted = getattr(running, setting.field), getattr(new, setting.field)
        if setting.restart and wanted != old:
            warnings.append(f"{setting.key} changed from {old} to {wanted}: that needs a "
                            f"restart; keeping {old}")
            kept[setting.field] = old
    return replace(new, **kept), warnings
