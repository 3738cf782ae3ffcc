"""Reading a configuration file: bounded in size, UTF-8, errors as ConfigError.

Shared by pesigitgd.conf (daemon/settings.py) and lb.toml (routing/route_config.py),
so both refuse the same things with the same words.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pesigitg.errors import ConfigError

__all__ = ["MAX_CONFIG_SIZE", "read_config_file"]

MAX_CONFIG_SIZE = 1 << 20       # 1 MiB: far beyond any real configuration


def read_config_file(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError("not a regular file", file=str(path))
            data = f.read(MAX_CONFIG_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if len(data) > MAX_CONFIG_SIZE:
        size = max(info.st_size, len(data))
        raise ConfigError(f"file is {size / (1 << 20):.1f} MiB, larger than the 1 MiB a "
                          "configuration may be", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=str(path)) from None
