"""The package as it would be published: the sdist and wheel build, pass `twine check`
(PyPI's own rendering of the README and metadata), carry what a user needs, and a fresh
virtual environment that installs the wheel can print the example configuration,
check it, and run the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest
import requests

from .children import free_port
from .conftest import wait_for
from .test_shipped_config import ENV

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_twine_check_passes_and_the_sdist_carries_what_users_need(dist):
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for wanted in ("LICENSE", "CHANGELOG.md", "README.md", "config.toml", "deploy/viber-exporter.service",
                   "grafana/dashboards", "grafana/prometheus", "docs/plugins.md", "exporter/example-config.toml"):
        assert any(n == wanted or n.startswith(wanted + "/") for n in names), wanted
    assert not [n for n in names if ".egg-info/" in n and not n.startswith("viber_exporter.egg-info")]
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        members = set(wheel.namelist())
    assert {"viber_exporter/example-config.toml", "viber_exporter/openapi.json", "viber_exporter/py.typed"} <= members
    metadata = next(m for m in members if m.endswith("METADATA"))
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        text = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text and "Classifier: Topic :: System :: Monitoring" in text
    assert "Project-URL: Repository, https://github.com/viber-exporter/viber-exporter" in text
    assert "](docs/" not in text and "](CHANGELOG" not in text, "the long description links absolutely"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_a_fresh_venv_installs_the_wheel_and_runs_example_config_check_config_and_demo(dist, tmp_path):
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python, script = home / "bin" / "python", home / "bin" / "viber-exporter"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(dist["wheel"])],
                   check=True, capture_output=True, timeout=600)
    env = {**os.environ, **ENV, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
    env.pop("PYTHONPATH", None)
    printed = subprocess.run([str(script), "example-config"], capture_output=True, text=True, check=True,
                             cwd=tmp_path, env=env).stdout
    (tmp_path / "config.toml").write_text(printed)
    checked = subprocess.run([str(script), "check-config"], capture_output=True, text=True, cwd=tmp_path, env=env,
                             check=False)
    assert checked.returncode == 0 and "configuration OK" in checked.stdout, checked.stdout + checked.stderr

    port = free_port()
    demo = subprocess.Popen([str(script), "demo", "--listen", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def transitions() -> bool:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                return False
            return 'viber_message_status_transitions_total{provider="bsg",status="delivered"}' in text

        wait_for(transitions, timeout=60, interval=0.5)
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=15)
        assert demo.returncode == 0, output
    finally:
        if demo.poll() is None:
            demo.kill()
            time.sleep(0.1)
    origin = subprocess.run([str(python), "-c", "import viber_exporter; print(viber_exporter.__file__)"],
                            capture_output=True, text=True, check=True, env=env).stdout
    assert origin.startswith(str(home)), f"the demo ran from the installed wheel, not the clone: {origin}"
