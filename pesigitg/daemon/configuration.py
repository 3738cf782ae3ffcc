"""Reading the daemon's two files, at start, for ``--check`` and on every reload, and
choosing from them where the probes leave from."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from pesigitg.daemon.model import Balancer
from pesigitg.daemon.settings import (
    DaemonConfig,
    keep_restart_settings,
    load_daemon_config,
    merge,
)
from pesigitg.daemon.sources import Sources, choose_sources, interface_candidates
from pesigitg.routing.route_config import RouteConfig, load_route_config
from pesigitg.routing.routes import check_runnable

__all__ = ["choose_probe_sources", "read_configuration", "read_reload"]

log = logging.getLogger("pesigitg")


def read_configuration(config_file: Path | None, cli: dict[str, object]
                       ) -> tuple[DaemonConfig, RouteConfig]:
    """The settings (the file's under the command line's) and the lb.toml they name,
    each checked whole (ConfigError, ValueError)."""
    config = merge(load_daemon_config(config_file) if config_file else None, cli)
    assert config.route_config is not None
    return config, load_route_config(config.route_config)


def choose_probe_sources(config: DaemonConfig, routes: RouteConfig) -> Sources:
    """Where probes and solicitations leave from, for the families of the backends that
    are probed (health checks on) or resolved (no static MAC); SourceError if a
    family has no address that is not a VIP."""
    assert config.interface is not None
    needing = [a for a in routes.addresses
               if routes.health.enabled or routes.backend_mac(a) is None]
    return choose_sources(config.interface, interface_candidates(config.interface),
                          routes.vips, needing, config.source_addresses)


def read_reload(model: Balancer, cli: dict[str, object]
                ) -> tuple[DaemonConfig, RouteConfig, Sources]:
    """What a reload applies: both files, checked whole and compiled once against what
    the daemon knows now (its MACs, health, drains), the settings a reload cannot change
    kept as they run, and the probes' sources (in a thread: it reads files)."""
    new, routes = read_configuration(model.config.config_file, cli)
    check_runnable(routes, model.if_mac, model.backend_fn(routes))
    new, warnings = keep_restart_settings(new, model.config)
    for warning in warnings:
        log.warning("%s", warning)
    return new, routes, choose_probe_sources(replace(new, interface=model.config.interface),
                                             routes)
