"""ruff and mypy run as part of the suite: a lint or type error fails the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(tool, path=str(Path(sys.executable).parent)) is None:
        pytest.fail(f"{tool} is not installed in the test environment (pip install '.[test]')")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, text=True,
                          capture_output=True, check=False)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "pesigitg", "tests", "benchmarks", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
