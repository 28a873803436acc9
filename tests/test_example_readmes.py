"""Each example plugin's README, run as written in a fresh virtual environment: the
core comes from the checkout (it is not on a package index), then the plugin, its
tests, and `viber-exporter plugins`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "README.md").exists())

pytestmark = pytest.mark.slow


def shell_block(readme: Path) -> list[str]:
    """The commands of the first ```sh block, without comments."""
    block = re.search(r"```sh\n(.*?)```", readme.read_text(encoding="utf-8"), re.DOTALL)
    assert block, f"{readme} has no sh block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_every_example_readme_installs_the_core_from_the_checkout_first():
    for example in EXAMPLES:
        commands = shell_block(example / "README.md")
        installs = [c for c in commands if c.startswith("pip install")]
        assert installs and installs[0] == "pip install -e ../..", (example.name, commands)


def test_the_example_readmes_work_in_a_fresh_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "VIBER_EXPORTER_LOAD_PLUGINS")}
    env |= {"VIRTUAL_ENV": str(env_dir), "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    listed: set[str] = set()
    for example in EXAMPLES:
        for command in shell_block(example / "README.md"):
            result = subprocess.run(command, shell=True, cwd=example, env=env, capture_output=True, text=True,
                                    timeout=600, check=False)
            assert result.returncode == 0, f"{example.name}: {command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            if command.startswith("viber-exporter plugins"):
                listed |= {p["name"] for p in json.loads(result.stdout)}
    assert {"parrot", "viber_exporter.plugins.routee", "viber_exporter.plugins.bsg"} <= listed
    assert Path(sys.executable).parent != bin_dir
