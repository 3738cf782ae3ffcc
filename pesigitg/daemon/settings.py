"""pesigitgd's own configuration: ``key = value`` file, command line, defaults.

The file uses the long flag names as keys (``port`` may repeat), ``#`` starts a
comment, and ``route_config`` is relative to the file. The command line wins over
the file, and ``-p`` replaces the file's ports rather than adding to them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from pesigitg._fastpath import MAX_PORTS, XSK_SLOTS
from pesigitg.configfile import read_config_file
from pesigitg.errors import ConfigError
from pesigitg.paths import RUNTIME_DIR

__all__ = ["DaemonConfig", "load_daemon_config", "merge"]

IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
DECIMAL = re.compile(r"^[0-9]{1,10}$")
XDP_MODES = ("native", "generic")
REPEATABLE = {"port", "source_address"}
KEYS = ("interface", "port", "queues", "route_config", "status_socket", "pidfile",
        "xdp_mode", "syslog_socket", "log_file", "user", "status_group", "source_address",
        "stats_interval", "log_format", "drain_quiet_s")
LOG_FORMATS = ("text", "json")
# Bounds of the settings that are durations in seconds.
SECONDS = {"stats_interval": (0, 86400), "drain_quiet_s": (1, 86400)}
ACCOUNT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class DaemonConfig:
    interface: str | None = None
    ports: tuple[int, ...] = ()
    queues: int | None = None             # None: one worker per RX queue of the NIC
    route_config: Path | None = None
    status_socket: Path | None = None     # default /run/pesigitg/pesigitgd-IFACE.sock
    pidfile: Path | None = None           # default /run/pesigitg/pesigitgd-IFACE.pid
    xdp_mode: str = "native"
    syslog_socket: Path = Path("/dev/log")
    log_file: Path | None = None          # daemon mode without syslog; default below
    user: str | None = None               # run as this user (started as root)
    status_group: str | None = None       # the status socket's group (default: ours)
    # Where health probes and neighbour solicitations leave from, at most one per
    # family; a family without one gets an interface address chosen at start.
    source_addresses: tuple[str, ...] = ()
    stats_interval: int = 60              # seconds between counter logs; 0: none
    log_format: str = "text"              # or json, one object a line
    drain_quiet_s: int = 60               # no CID-routed frame that long: fully drained
    config_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

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
        return {"interface": self.interface, "ports": list(self.effective_ports),
                "queues": self.queues, "route_config": str(self.route_config),
                "status_socket": str(self.effective_status_socket),
                "pidfile": str(self.effective_pidfile), "xdp_mode": self.xdp_mode,
                "log_file": str(self.log_file) if self.log_file else None,
                "user": self.user, "status_group": self.status_group,
                "source_addresses": list(self.source_addresses),
                "stats_interval": self.stats_interval, "log_format": self.log_format,
                "drain_quiet_s": self.drain_quiet_s,
                "config_file": str(self.config_file) if self.config_file else None}


def parse_value(key: str, raw: str, *, file: str | None = None, line: int | None = None,
                base: Path | None = None) -> object:
    """Check and convert one setting; the same rules for the file and the flags."""
    def fail(message: str) -> ConfigError:
        return ConfigError(message, file=file, line=line, key=key, value=raw)

    if key == "interface":
        if not IFNAME.match(raw):
            raise fail("not an interface name (1-15 of letters, digits, _ . : @ -)")
        return raw
    if key in ("port", "queues", *SECONDS):
        # ASCII digits only: int() would also take full-width digits or '4_43'.
        if not DECIMAL.match(raw):
            raise fail("not a decimal number")
        number = int(raw)
        low, high = SECONDS.get(key) or ((1, 65535) if key == "port" else (1, XSK_SLOTS))
        if not low <= number <= high:
            raise fail(f"must be between {low} and {high}")
        return number
    if key in ("xdp_mode", "log_format"):
        choices = XDP_MODES if key == "xdp_mode" else LOG_FORMATS
        if raw not in choices:
            raise fail(f"must be one of {', '.join(choices)}")
        return raw
    if key in ("user", "status_group"):
        if not ACCOUNT.match(raw):
            raise fail("not a user or group name or number")
        return raw
    if key == "source_address":
        try:
            address = ipaddress.ip_address(raw if raw.isascii() else "")
        except ValueError:
            raise fail("not an IPv4 or IPv6 address") from None
        if address.is_multicast or address.is_unspecified or address.is_link_local \
                or address.is_loopback:
            raise fail("not a unicast address a backend can answer (multicast, "
                       "unspecified, link-local or loopback)")
        return str(address)
    if key in ("route_config", "status_socket", "pidfile", "syslog_socket", "log_file"):
        if not raw:
            raise fail("empty path")
        path = Path(raw)
        return base / path if base is not None and not path.is_absolute() else path
    raise ConfigError(f"unknown setting (known: {', '.join(KEYS)})", file=file, line=line,
                      key=key)


_FIELD = {"port": "ports", "source_address": "source_addresses"}


def load_daemon_config(path: Path) -> DaemonConfig:
    """Read a ``key = value`` file; every problem names the file and line."""
    text = read_config_file(path)
    values: dict[str, object] = {}
    seen: dict[str, int] = {}
    repeated: dict[str, list[object]] = {key: [] for key in REPEATABLE}
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
        if key in seen and key not in REPEATABLE:
            raise ConfigError(f"given twice (first on line {seen[key]})", file=str(path),
                              line=number, key=key, value=raw)
        seen[key] = number
        value = parse_value(key, raw, file=str(path), line=number,
                            base=path.parent if key == "route_config" else None)
        if key == "source_address":
            version = ipaddress.ip_address(str(value)).version
            first = families.setdefault(version, number)
            if first != number:
                raise ConfigError(f"a second IPv{version} address (first on line {first}); "
                                  "give at most one per address family", file=str(path),
                                  line=number, key=key, value=raw)
        if key in REPEATABLE:
            repeated[key].append(value)
        else:
            values[key] = value
    for key, given in repeated.items():
        if given:
            values[_FIELD[key]] = tuple(dict.fromkeys(given))
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
    """Command-line values (already parsed) over the file's, then check completeness."""
    config = file_config or DaemonConfig()
    changes = {_FIELD.get(k, k): v for k, v in cli.items() if v is not None and v != []}
    for name in _FIELD.values():
        if name in changes:
            changes[name] = tuple(dict.fromkeys(changes[name]))  # type: ignore[call-overload]
    config = replace(config, **changes)  # type: ignore[arg-type]
    where = str(config.config_file) if config.config_file else "command line"
    _check_repeated(config, where)
    if not config.interface:
        raise ConfigError("no interface given (-i IFACE or 'interface = IFACE')", file=where)
    if config.route_config is None:
        raise ConfigError("no route config given (-r FILE or 'route_config = FILE')",
                          file=where)
    return config
