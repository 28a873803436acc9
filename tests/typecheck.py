"""mypy over the package as it is installed: ``python -m tests.typecheck``.

The repository keeps ``exporter/`` and ``plugins/`` while the import name is
``viber_exporter`` (setuptools' package-dir). An editable install maps the two with an
import hook, which mypy cannot follow, so this builds the installed layout as a tree of
symbolic links in a temporary folder (``viber_exporter/`` → ``exporter/*``,
``viber_exporter/plugins`` → ``plugins/``) and checks that, plus the dashboard generator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def link_tree(dest: Path) -> Path:
    package = dest / "viber_exporter"
    package.mkdir()
    for entry in (ROOT / "exporter").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "plugins").symlink_to(ROOT / "plugins")
    return package


def run_mypy() -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="viber-exporter-typecheck-") as tmp:
        package = link_tree(Path(tmp))
        env = {**os.environ, "MYPYPATH": tmp}
        return subprocess.run(
            [sys.executable, "-m", "mypy", str(package), str(ROOT / "grafana" / "generate.py")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )


if __name__ == "__main__":
    result = run_mypy()
    sys.stdout.write(result.stdout.replace("viber-exporter-typecheck-", ""))
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
