"""Each example plugin's README, run as written in a fresh virtual environment: the
core comes from the checkout (it is not on a package index), then the plugin, its
tests, and `viber-exporter plugins` — and the examples as plugin API 1.1 had them, against
this core."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
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


def run_readmes(examples: list[Path], env_dir: Path) -> set[str]:
    """Run each example's README commands as written, in one fresh venv; ``../..`` (the
    core) is this checkout wherever the examples lie. Returns what `plugins` listed."""
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "VIBER_EXPORTER_LOAD_PLUGINS")}
    env |= {"VIRTUAL_ENV": str(env_dir), "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    listed: set[str] = set()
    for example in examples:
        for command in shell_block(example / "README.md"):
            command = command.replace("pip install -e ../..", f"pip install -e {ROOT}")
            result = subprocess.run(command, shell=True, cwd=example, env=env, capture_output=True, text=True,
                                    timeout=600, check=False)
            assert result.returncode == 0, f"{example.name}: {command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            if command.startswith("viber-exporter plugins"):
                listed |= {p["name"] for p in json.loads(result.stdout)}
    assert Path(sys.executable).parent != bin_dir
    return listed


def test_the_example_readmes_work_in_a_fresh_venv(tmp_path):
    listed = run_readmes(EXAMPLES, tmp_path / "venv")
    assert {"parrot", "viber_exporter.plugins.routee", "viber_exporter.plugins.bsg"} <= listed


#: The start of round three, where plugin API 1.1 was current: plugins written against
#: it (its three examples, as they were) must keep loading and passing their own tests.
API_1_1 = "ca1c697"


def test_plugins_written_for_api_1_1_still_pass_their_own_tests(tmp_path):
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{API_1_1}^{{commit}}"],
                           capture_output=True, check=False)
    if found.returncode != 0:
        pytest.skip(f"{API_1_1} is not in this clone's history (a shallow clone?)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", API_1_1, "examples"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    old = sorted(p for p in (tmp_path / "examples").iterdir() if (p / "README.md").exists())
    assert [p.name for p in old] == [p.name for p in EXAMPLES]
    listed = run_readmes(old, tmp_path / "venv")
    assert "parrot" in listed
