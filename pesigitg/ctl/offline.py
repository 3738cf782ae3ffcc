"""What pesigitg-ctl answers from lb.toml alone, without a daemon (routing only, never
the daemon's modules): ``whoami CID -r lb.toml``, and ``backend-config SERVER_ID -r
lb.toml``, what a backend needs to issue connection IDs pesigitgd routes to it, for
every config that lists the server ID (it prints key material, so it reads the file,
never asks the daemon)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pesigitg.ctl.client import DaemonError
from pesigitg.errors import ConfigError
from pesigitg.routing.route_config import RouteConfig, load_route_config
from pesigitg.routing.routes import Backend, check_runnable
from pesigitg.routing.whoami import explain_cid

__all__ = ["backend_config", "backend_config_of", "render_backend_config", "whoami_offline"]


def _load(path: Path) -> RouteConfig:
    try:
        return load_route_config(path)
    except (ConfigError, OSError, ValueError) as exc:
        raise DaemonError(str(exc)) from None


def whoami_offline(path: Path, cid: bytes) -> dict[str, Any]:
    """What the packet path would do with ``cid`` under lb.toml at ``path``, every server
    assumed up with a MAC."""
    routes = _load(path)
    try:
        compiled = check_runnable(routes, bytes(6), lambda a: Backend(
            a, bytes(6), True, routes.backend_draining(a)))
    except (ConfigError, ValueError) as exc:
        raise DaemonError(str(exc)) from None
    answer = explain_cid(compiled, cid, {a: "up (assumed)" for a in routes.addresses})
    answer["offline"] = True
    return answer


def backend_config_of(path: Path, server_id: bytes) -> dict[str, Any]:
    """:func:`backend_config` of lb.toml at ``path``; DaemonError when no config lists
    ``server_id``."""
    config = backend_config(_load(path), server_id)
    if not config["configs"]:
        raise DaemonError(f"no config in {path} lists server ID {server_id.hex()}")
    return config


def backend_config(routes: RouteConfig, server_id: bytes) -> dict[str, Any]:
    """Every config listing ``server_id``, with what a backend must use; empty when
    none does."""
    configs = []
    for spec in routes.servers:
        if spec.server_id != server_id:
            continue
        c = next(c for c in routes.configs if c.config_id == spec.config_id)
        configs.append({"config_id": c.config_id, "server_id": server_id.hex(),
                        "server_id_length": c.server_id_len, "nonce_length": c.nonce_len,
                        "first_octet_encodes_cid_length": c.encode_length,
                        "cid_length": c.cid_len, "mode": c.mode,
                        "key": c.key.hex() if c.key is not None else None,
                        "address": spec.address})
    out: dict[str, Any] = {"route_config": str(routes.path), "configs": configs}
    if routes.retry.keys:
        out["retry"] = {"keys_from": str(routes.path),
                        "aioquic": "retry=RetryKeys.from_lb_toml(ROUTE_CONFIG)"}
    return out


def render_backend_config(config: dict[str, Any]) -> str:
    """As TOML a backend's own configuration can hold, with the aioquic call."""
    lines = [f"# For the backend: from {config['route_config']} (contains keys: keep it "
             "private)."]
    for c in config["configs"]:
        lines += ["", "[[configs]]", f"config_id = {c['config_id']}",
                  f'server_id = "{c["server_id"]}"',
                  f"server_id_length = {c['server_id_length']}",
                  f"nonce_length = {c['nonce_length']}",
                  "first_octet_encodes_cid_length = "
                  + json.dumps(c["first_octet_encodes_cid_length"])]
        if c["key"] is not None:
            lines.append(f'key = "{c["key"]}"')
        key = f'bytes.fromhex("{c["key"]}")' if c["key"] else "None"
        lines += [f"# {c['mode']}: CIDs of {c['cid_length']} octets; this server is at "
                  f"{c['address']}",
                  "# aioquic (pip install pesigitg[aioquic]):",
                  "#   from pesigitg import CidConfig",
                  "#   from pesigitg.backend.aioquic import serve",
                  f"#   config = CidConfig({c['config_id']}, {c['server_id_length']}, "
                  f"{c['nonce_length']}, key={key}, encode_length="
                  f"{c['first_octet_encodes_cid_length']})",
                  "#   await serve(VIP, 443, configuration=quic, cid_config=config,",
                  f'#               server_id=bytes.fromhex("{c["server_id"]}")'
                  + (", retry=RetryKeys.from_lb_toml(ROUTE_CONFIG))" if "retry" in config
                     else ")")]
    if "retry" in config:
        lines += ["", "# The Retry offload is configured: the backend takes its tokens with "
                      "the keys of", f"# {config['retry']['keys_from']} ([retry])."]
    return "\n".join(lines)

