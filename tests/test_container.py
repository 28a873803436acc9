"""The container image, built from the Containerfile and run with podman.

There is no Docker engine on the project's machines and no registry to pull from, so
this follows ../shared/containers.md: podman with runc and a containers.conf without
default ulimits, a Debian base made with debootstrap (kept as
localhost/debian-python:bookworm for the next run), host networking, and wheels built
on the host (passed to the build as PIP_OPTIONS; users build the ordinary way).

Marked ``container``: `python -m pytest` leaves it out (it needs root, podman, runc and
debootstrap, and a few minutes); `.ci/run` runs it beside the suite with
`python -m pytest -m container`, where VIBER_EXPORTER_REQUIRE_E2E=1 makes a missing
tool a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from viber_exporter.server import BackgroundServer
from viber_exporter.testing.mock import BSG_API_KEY, MockProviders

from .children import free_port
from .conftest import wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/debian-python:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def tools() -> None:
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        why = f"needs root and {', '.join(missing) or 'nothing else'}"
        if os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail(f"the container test {why} (apt-get install podman runc debootstrap)")
        pytest.skip(f"the container test {why}")


class Podman:
    def __init__(self, workdir: Path) -> None:
        conf = workdir / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", "--runtime", "runc", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.stdout}{result.stderr}")
        return result


def mirror() -> str:
    """The Debian mirror apt already uses here (the one that answers)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return DEBIAN_MIRROR


def base_image(podman: Podman, workdir: Path) -> None:
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return
    rootfs = workdir / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                    "bookworm", str(rootfs), mirror()], check=True, capture_output=True, timeout=900)
    tarball = workdir / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    podman("import", str(tarball), BASE)
    shutil.rmtree(rootfs, ignore_errors=True)
    tarball.unlink()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Podman, str]]:
    tools()
    workdir = tmp_path_factory.mktemp("container")
    podman = Podman(workdir)
    base_image(podman, workdir)
    # The build context: the repository's tracked files, plus wheels of everything.
    context = workdir / "context"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    wheels = context / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheels),
                    f"{context}[postgresql]", "setuptools>=77"], check=True, capture_output=True, timeout=900)
    tag = f"localhost/viber-exporter:test-{uuid.uuid4().hex[:8]}"
    podman("build", "--network", "host", "--build-arg", f"BASE={BASE}",
           "--build-arg", "PIP_OPTIONS=--no-index --find-links=/src/wheels",
           "-t", tag, "-f", str(context / "Containerfile"), str(context), timeout=1200)
    try:
        yield podman, tag
    finally:
        podman("rmi", "-f", tag, check=False)
        podman("image", "prune", "-f", check=False)


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def stop(podman: Podman, name: str) -> tuple[float, int]:
    """SIGTERM (podman stop), then the time it took and the exit code."""
    started = time.monotonic()
    podman("stop", "-t", "10", name)
    took = time.monotonic() - started
    state = json.loads(podman("inspect", name).stdout)[0]["State"]
    return took, int(state["ExitCode"])


def test_the_image_runs_the_demo_as_a_non_root_pid_1_and_stops_on_sigterm(image):
    podman, tag = image
    name = f"vx-demo-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman("run", "-d", "--network", "host", "--name", name, tag, "demo", "--listen", f"127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(url), timeout=60, interval=0.5)
        wait_for(lambda: 'status="delivered"' in requests.get(f"{url}/metrics", timeout=5).text, timeout=60)
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001", "not root"
        top = podman("top", name, "user", "pid", "args").stdout.splitlines()[1].split()
        assert top[:2] == ["viber", "1"] and "viber-exporter" in " ".join(top[2:]), top
        took, code = stop(podman, name)
        assert code == 0 and took < 10, f"exit {code} after {took:.1f} s"
        config = json.loads(podman("image", "inspect", tag).stdout)[0]["Config"]
        assert "9839/tcp" in config["ExposedPorts"] and "/data" in config["Volumes"]
        assert config["Entrypoint"] == ["viber-exporter"] and config["Cmd"] == ["run"]
    finally:
        podman("rm", "-f", "-v", name, check=False)


def test_run_with_a_mounted_config_keeps_its_watched_set_in_the_volume_across_restarts(image, tmp_path):
    podman, tag = image
    mock = BackgroundServer(MockProviders(), "127.0.0.1", 0)
    mock.start()
    port = free_port()
    volume = f"vx-data-{uuid.uuid4().hex[:8]}"
    name = f"vx-run-{uuid.uuid4().hex[:8]}"
    (tmp_path / "config.toml").write_text(f"""
[exporter]
listen = "127.0.0.1:{port}"
state_path = "${{STATE_DIRECTORY}}/viber-exporter.db"
[polling]
schedule = ["1h"]
[providers.bsg]
plugin = "bsg"
api_key = "${{BSG_API_KEY}}"
base_url = "{mock.url}"
""")
    url = f"http://127.0.0.1:{port}"
    # read-only like the Kubernetes manifests' pods (readOnlyRootFilesystem, no tmpfs)
    run = ["run", "-d", "--network", "host", "--read-only", "--read-only-tmpfs=false", "--name", name,
           "-e", f"BSG_API_KEY={BSG_API_KEY}",
           "-v", f"{volume}:/data", "-v", f"{tmp_path / 'config.toml'}:/etc/viber-exporter/config.toml:ro,Z", tag]
    try:
        podman(*run)
        wait_for(lambda: ready(url), timeout=60, interval=0.5)
        ids = [str(9000 + n) for n in range(5)]
        answer = requests.post(f"{url}/api/v1/messages", json={"messages": [{"provider": "bsg", "id": i} for i in ids]},
                               timeout=10)
        assert answer.status_code == 200, answer.text
        took, code = stop(podman, name)
        assert code == 0 and took < 10
        podman("rm", name)
        podman(*run)  # a new container on the same volume
        wait_for(lambda: ready(url), timeout=60, interval=0.5)
        listed = requests.get(f"{url}/api/v1/messages", params={"provider": "bsg"}, timeout=10).json()
        assert sorted(m["id"] for m in listed["messages"]) == ids, "the watched set survived the restart"
        stop(podman, name)
    finally:
        podman("rm", "-f", "-v", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)
        mock.stop()
