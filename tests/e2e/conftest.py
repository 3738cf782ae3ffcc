"""End-to-end tier: real QUIC (aioquic) through the real pesigitgd, in namespaces."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.root)
