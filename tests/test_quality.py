"""ruff and mypy run as part of the test suite, so the README's one test command checks them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .typecheck import run_mypy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_lint_and_format():
    lint = run(sys.executable, "-m", "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", "exporter", "plugins")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict():
    result = run_mypy()
    assert result.returncode == 0, result.stdout + result.stderr
