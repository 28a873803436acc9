"""``run`` and ``demo``: the commands that serve until a signal stops them."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import click

from ..config.load import (
    LISTEN_HINT,
    LOG_LEVELS,
    default_config_path,
    split_listen,
)
from ..config.model import Config
from ..errors import StoreError
from ..httpserver import bind_problem
from ..logs import setup_logging
from ..signals import SignalWaiter, signals_blocked
from ..version import __version__
from ..web.app import is_loopback
from .common import Failure, cli, config_option, listen_address, load_or_fail, load_plugins

# The name log lines have always carried (cli.py before it became a package).
log = logging.getLogger("viber_exporter.cli")


STOP_TIMEOUT = 8.0


@cli.command(short_help="Run the exporter (poll, serve /metrics and the API).")
@config_option
@click.option(
    "--listen",
    callback=listen_address,
    help="HOST:PORT to serve on, instead of the configuration's exporter.listen.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    help="Instead of the configuration's exporter.log_level (also after a reload).",
)
def run(config_path: Path | None, listen: tuple[str, int] | None, log_level: str | None) -> None:
    """Run the exporter: poll providers and serve /metrics and the API."""

    def adjust(config: Config) -> Config:
        exporter = config.exporter
        if listen is not None:
            exporter = dataclasses.replace(exporter, listen_host=listen[0], listen_port=listen[1])
        if log_level is not None:
            exporter = dataclasses.replace(exporter, log_level=log_level)
        return dataclasses.replace(config, exporter=exporter)

    # Signals first: one that arrives during start-up waits instead of killing us.
    with signals_blocked() as signals:
        _run(config_path, signals, adjust)


def _run(
    config_path: Path | None, signals: SignalWaiter, adjust: Callable[[Config], Config]
) -> None:
    from ..engine import Exporter
    from ..reload import Reloader
    from ..server import HttpServer

    host, loaded = load_or_fail(config_path)
    config = adjust(loaded)
    setup_logging(config.exporter.log_level, config.exporter.log_format)
    try:
        exporter = Exporter(config, host)
    except StoreError as e:
        raise Failure(str(e)) from e
    reloader = Reloader(exporter, host, config_path or default_config_path(), adjust)
    try:
        server = HttpServer(
            exporter, config.exporter.listen_host, config.exporter.listen_port, reloader
        )
    except (OSError, ssl.SSLError) as e:
        exporter.stop()
        raise Failure(f"cannot listen on {config.exporter.listen}: {bind_problem(e)}") from e
    exporter.start()
    server.start()
    log.info("viber-exporter %s listening on %s", __version__, server.bound)
    warn_if_open(config)
    signals.wait(reloader.reload)
    server.stop()
    exporter.stop(timeout=STOP_TIMEOUT)
    log.info("stopped")


def warn_if_open(config: Config) -> None:
    """Say so when anyone who can reach the port may write (register, delete, reload)."""
    exporter = config.exporter
    if exporter.api_token is None and not is_loopback(exporter.listen_host):
        log.warning(
            "listening beyond loopback without exporter.api_token: the write API "
            "(registrations, deletions, reload) refuses other hosts, but takes anything a "
            "proxy on this host forwards; set api_token (e.g. "
            '"${VIBER_EXPORTER_API_TOKEN}") to require a token from every client'
        )


@cli.command(short_help="A demo with mock providers; no credentials needed.")
@click.option(
    "--listen", default="127.0.0.1:9839", show_default=True, help="The exporter's HOST:PORT."
)
@click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Keep the state here (default: a temporary file).",
)
def demo(listen: str, state: Path | None) -> None:
    """Mock Routee and BSG, an exporter polling them, and simulated traffic. No credentials needed."""
    from ..demo import Demo

    address = split_listen(listen)
    if address is None:
        raise click.BadParameter(f"{LISTEN_HINT}, got {listen!r}", param_hint="--listen")
    with signals_blocked() as signals:
        setup_logging("info", "text")
        try:
            running = Demo(load_plugins(), address[0], address[1], state)
        except OSError as e:
            raise Failure(f"cannot listen on {listen}: {bind_problem(e)}") from e
        running.start(click.echo)
        signals.wait()
        running.stop()
    click.echo("demo stopped")
