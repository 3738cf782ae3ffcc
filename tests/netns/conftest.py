"""netns tier: veth pairs in throwaway namespaces (root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pesigitg.netns import namespace, veth_pair


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.root)


@pytest.fixture
def veth_ns() -> Iterator[str]:
    """A namespace holding the veth pair v0 <-> v1."""
    with namespace() as ns:
        veth_pair(ns, "v0", "v1")
        yield ns
