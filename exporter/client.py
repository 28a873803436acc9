"""The command line's HTTP client of a running exporter's API (``watch`` commands)."""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path
from typing import Any

import click
import requests

from .config import default_config_path

API_TOKEN_ENV = "VIBER_EXPORTER_API_TOKEN"  # noqa: S105 (a variable name)


class ClientFailure(click.ClickException):
    """Exit 1 with a one-line reason on stderr."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"viber-exporter: {self.message}", err=True)


def default_url(config_path: Path | None) -> str:
    """The running exporter's address from the config's `listen` (unvalidated read)."""
    path = config_path or default_config_path()
    listen = "127.0.0.1:9839"
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        listen = str(
            tomllib.loads(path.read_text(encoding="utf-8"))
            .get("exporter", {})
            .get("listen", listen)
        )
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"http://{host}:{port}"


class ApiClient:
    def __init__(self, url: str | None, config_path: Path | None) -> None:
        self.url = (url or default_url(config_path)).rstrip("/")
        self.session = requests.Session()
        token = os.environ.get(API_TOKEN_ENV)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        except requests.RequestException as e:
            raise ClientFailure(
                f"cannot reach the exporter at {self.url}: {type(e).__name__}"
            ) from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else response.reason
            details = body.get("details") if isinstance(body, dict) else None
            if details:
                for d in details[:20]:
                    click.echo(f"  item {d.get('index')}: {d.get('error')}", err=True)
            raise ClientFailure(f"HTTP {response.status_code}: {error}")
        return body
