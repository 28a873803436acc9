"""Helpers for tests that run ``viber-exporter`` as a child process (``spawned`` and
``stop``, ``Child``) or serve an exporter within fixed limits: the real boundary (a
process, signals, sockets) for several modules' tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import requests

from viber_exporter.config.load import parse_config
from viber_exporter.engine import Exporter
from viber_exporter.pluginhost import PluginHost
from viber_exporter.server import HttpServer
from viber_exporter.testing.mock import exporter_config
from viber_exporter.testing.simulation import Mix

SCRIPT = Path(sys.executable).parent / "viber-exporter"
CALLBACK_TOKEN = "callback-t0ken/with-slash"
#: Messages that settle within about a second.
QUICK = Mix(pending=0.0, delivery_median=0.3, read_median=0.3, final_median=0.3, sigma=0.3, visible_after=0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """``viber-exporter run`` in a child process, on its own port."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": ""}
        self.process = subprocess.Popen([str(SCRIPT), "run", "--config", str(config)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready(self) -> bool:
        assert self.process.poll() is None, f"the exporter died: {self.process.stderr.read()}"  # type: ignore[union-attr]
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def metric(self, line_start: str) -> float:
        for line in requests.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {line_start} in /metrics")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return str(err)


def child_config(tmp_path: Path, mock_url: str, port: int, **exporter: object) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(exporter_config(mock_url, tmp_path / "s.db",
                                    exporter={"listen": f"127.0.0.1:{port}", **exporter},
                                    polling={"tick": "200ms"},
                                    routee={"callback_token": CALLBACK_TOKEN}))
    return path


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def routee_report(tracking_id: str, **fields: object) -> dict[str, object]:
    return {"trackingId": tracking_id, "status": {"name": "DELIVERED", "updatedDate": rfc3339(time.time())},
            "price": 0.02, **fields}


def callback(child: Child, body: object, token: str = CALLBACK_TOKEN) -> requests.Response:
    return requests.post(f"{child.url}/api/v1/callbacks/routee", params={"token": token}, json=body, timeout=30)


def limited_exporter(tmp_path: Path, mock_url: str, builtin_host: PluginHost, *,
                     users: dict[str, str] | None = None, **limits: object) -> Exporter:
    text = exporter_config(mock_url, tmp_path / "s.db", exporter=dict(limits), routee={"callback_token": CALLBACK_TOKEN})
    if users:
        text += "[exporter.basic_auth_users]\n" + "".join(f'{u} = "{h}"\n' for u, h in users.items())
    exporter = Exporter(parse_config(text, builtin_host.provider_types(), {}), builtin_host)
    exporter.start()
    return exporter


def hashed(password: str, cost: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def callback_to(server: HttpServer, body: object) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/callbacks/routee", params={"token": CALLBACK_TOKEN}, json=body, timeout=10)


def answers(url: str) -> bool:
    """Whether an exporter at ``url`` answers its liveness check."""
    try:
        return requests.get(f"{url}/-/healthy", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def mock_config(url: str, state: Path, **bsg: object) -> str:
    limits = {"rate_limit": 1000, "concurrency": 4}
    return exporter_config(url, state, polling={"tick": "100ms", "schedule": ["200ms"], "read_window": "1s"},
                           routee=limits, bsg={**limits, **bsg})


def running(host: PluginHost, text: str) -> Exporter:
    exporter = Exporter(parse_config(text, host.provider_types(), {}), host)
    exporter.start()
    return exporter


@contextlib.contextmanager
def spawned(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    """``viber-exporter ARGS`` as a child process (installed plugins not loaded), its
    output and errors on one pipe; killed on the way out if the test left it running."""
    environ = {**os.environ, "VIBER_EXPORTER_LOAD_PLUGINS": "", **(env or {})}
    process = subprocess.Popen([str(SCRIPT), *args], env=environ, cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 12.0) -> str:
    """Send ``sig`` and wait for the exit; returns everything the process wrote."""
    process.send_signal(sig)
    output, _ = process.communicate(timeout=timeout)
    return str(output)
