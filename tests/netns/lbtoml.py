"""lb.toml for the daemon tests."""

from __future__ import annotations

import json
from typing import Any

LB_TOML = """
[health]
enabled = {health}
interval_ms = 200
timeout_ms = 150
rise = 2
fall = 2

[fallback]
table_size = 5003

[[configs]]
config_id = 1
server_id_length = 3
nonce_length = 4
key = "8f95f09245765f80256934e50c66207f"
first_octet_encodes_cid_length = true
{servers}
"""

SERVER = """
  [[configs.servers]]
  id = "{sid}"
  address = "{address}"
{extra}"""


def lb_toml(servers: list[dict[str, Any]], health: bool = False) -> str:
    blocks = []
    for s in servers:
        extra = "".join(f'  {k} = {json.dumps(v)}\n' for k, v in s.items()
                        if k not in ("sid", "address"))
        blocks.append(SERVER.format(sid=s["sid"], address=s["address"], extra=extra))
    return LB_TOML.format(health="true" if health else "false", servers="".join(blocks))
