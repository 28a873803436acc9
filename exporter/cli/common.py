"""The command group and what every command shares: loading the plugins and the
configuration, the common options, and the one way a command fails (exit 1)."""

from __future__ import annotations

from pathlib import Path

import click

from ..client import ClientFailure
from ..config.load import (
    LISTEN_HINT,
    default_config_path,
    load_config,
    split_listen,
)
from ..config.model import Config
from ..errors import ConfigError, PluginError
from ..pluginhost import PluginHost
from ..version import __version__

Failure = ClientFailure  # exit 1 with a one-line reason on stderr


def load_plugins() -> PluginHost:
    host = PluginHost()
    host.load()
    return host


def load(config_path: Path | None, host: PluginHost) -> Config:
    path = config_path or default_config_path()
    try:
        return load_config(path, host.provider_types(), failed_plugins=host.failures())
    except PluginError as e:
        raise Failure(str(e)) from e


def load_or_fail(config_path: Path | None) -> tuple[PluginHost, Config]:
    """The plugins and the validated config; on problems, list them all and exit 1."""
    host = load_plugins()
    try:
        return host, load(config_path, host)
    except ConfigError as e:
        click.echo(str(e), err=True)
        raise Failure("invalid configuration") from e


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Configuration file (default: $VIBER_EXPORTER_CONFIG or ./config.toml).",
)


url_option = click.option(
    "--url", help="The exporter's address (default: from the config's listen)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="viber-exporter")
def cli() -> None:
    """Prometheus exporter for the delivery status, latency and cost of Viber messages."""


def listen_address(
    _: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """A ``--listen HOST:PORT`` option, read as the configuration reads ``listen``."""
    if value is None:
        return None
    address = split_listen(value)
    if address is None:
        raise click.BadParameter(f"{LISTEN_HINT}, got {value!r}", param=param)
    return address
