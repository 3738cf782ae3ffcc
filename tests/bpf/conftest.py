"""BPF tier: loads programs into the kernel (root), no interfaces touched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pesigitg.daemon.steering import Steering

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def xdp() -> Iterator[Steering]:
    with Steering.load() as program:
        program.set_ports([443, 4433])
        yield program


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.root)
