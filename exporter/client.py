"""The command line's HTTP client of a running exporter's API (``watch`` commands)."""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path
from typing import Any

import click
import requests

from .config.load import default_config_path
from .http import describe_transport_error

API_TOKEN_ENV = "VIBER_EXPORTER_API_TOKEN"  # noqa: S105 (a variable name)
#: "user:password" of an ``exporter.basic_auth_users`` entry, when no token is set
BASIC_AUTH_ENV = "VIBER_EXPORTER_BASIC_AUTH"


class ClientFailure(click.ClickException):
    """Exit 1 with a one-line reason on stderr (after the API's per-item details)."""

    exit_code = 1

    def __init__(
        self, message: str, status: int | None = None, details: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.details = details or []

    def show(self, file: Any = None) -> None:
        for d in self.details[:20]:
            if isinstance(d, dict):
                where = f"item {d['index']}" if "index" in d else d.get("key", "")
                click.echo(f"  {where}: {d.get('error')}", err=True)
        if len(self.details) > 20:
            click.echo(f"  ... and {len(self.details) - 20} more", err=True)
        click.echo(f"viber-exporter: {self.message}", err=True)


def token_hint(status: int) -> str:
    """What to do about a 401 or 403 from the write API."""
    if status not in (401, 403):
        return ""
    if os.environ.get(API_TOKEN_ENV):
        return f" (the token in ${API_TOKEN_ENV} is not the exporter's exporter.api_token)"
    return (
        f" (set ${API_TOKEN_ENV} to the exporter's exporter.api_token, or ${BASIC_AUTH_ENV} "
        "to user:password of exporter.basic_auth_users; without a token only loopback "
        "clients may write)"
    )


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
        user, _, password = os.environ.get(BASIC_AUTH_ENV, "").partition(":")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user:
            self.session.auth = (user, password)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        except requests.RequestException as e:
            # a short cause, not the exception's name (ConnectionError says nothing)
            cause = describe_transport_error(e, self.url).partition(": ")[2]
            raise ClientFailure(
                f"cannot reach the exporter at {self.url}: {cause} "
                "(is it running? --url, or the config's exporter.listen)"
            ) from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else response.reason
            details = body.get("details") if isinstance(body, dict) else None
            raise ClientFailure(
                f"HTTP {response.status_code}: {error}{token_hint(response.status_code)}",
                response.status_code,
                details if isinstance(details, list) else None,
            )
        return body
