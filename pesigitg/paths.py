"""Where pesigitgd keeps its runtime files by default, importable without the daemon's
modules: ``pesigitg-ctl health`` runs several times a second under a BGP speaker, and
each run's start-up is most of its cost."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUNTIME_DIR"]

# pesigitgd creates it, owned by the user it runs as (systemd's
# RuntimeDirectory=pesigitg does the same).
RUNTIME_DIR = Path("/run/pesigitg")
