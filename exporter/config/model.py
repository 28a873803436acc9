"""The validated configuration as plain, immutable data (SPEC §5).

Dependency-free on purpose: the accounting rules and the store read these settings
without pulling in the plugin host, pluggy or requests. ``config.py`` builds them
from ``config.toml``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..labels import LabelSettings
from ..secrets import Secret

if TYPE_CHECKING:
    from ..provider import ProviderType

DEFAULT_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True)
class TlsSettings:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None  # set: clients must present a certificate it signed


@dataclass(frozen=True)
class ServerLimits:
    """The HTTP server's bounds (``[exporter]`` keys of the same names)."""

    #: worker threads: requests served at once (idle connections need none)
    threads: int = 16
    #: open connections at most; a new one past this is closed at once
    max_connections: int = 512
    #: a connection with no request in progress is closed after this; also the
    #: longest a read or write may stall
    idle_timeout: float = 30.0
    #: a request's headers and body must have arrived within this
    body_timeout: float = 60.0


@dataclass(frozen=True)
class ExporterSettings:
    listen_host: str
    listen_port: int
    state_path: Path
    api_token: Secret | None
    log_level: str
    log_format: str
    tls: TlsSettings | None = None
    #: user → bcrypt hash; when set, /metrics needs HTTP basic auth
    basic_auth_users: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    #: a postgresql:// URI: the shared store of several replicas (instead of state_path)
    state_url: Secret | None = None
    server: ServerLimits = field(default_factory=ServerLimits)
    #: how this replica is named on the landing page and in the providers JSON
    #: (None: the host name and the listen port)
    replica_name: str | None = None

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def replica(self) -> str:
        """This replica's name: ``exporter.replica_name``, else ``host:port``."""
        return self.replica_name or f"{socket.gethostname()}:{self.listen_port}"


@dataclass(frozen=True)
class PollingSettings:
    tick: float
    schedule: tuple[float, ...]
    max_age: float
    read_window: float
    not_found_grace: float
    retention: float
    max_watched: int
    #: how long after a watch's end (read window or max_age) to keep trying for its
    #: final answer before giving up without one
    final_look_grace: float = 3600.0
    #: push-first (a provider instance whose reports are pushed): polls are only the
    #: safety net for lost reports, on ``push_schedule``; a delivered message waits
    #: for its read report and gets one poll more, the final look at its watch's end
    push_first: bool = False
    push_schedule: tuple[float, ...] = (30.0, 120.0, 600.0, 3600.0, 14400.0)
    #: ``schedule = "adaptive"``: polls planned from the learned delays (adaptive.py)
    #: within this many expected calls per message; ``schedule`` is then the fixed
    #: default, followed until there is enough to learn from
    adaptive: bool = False
    adaptive_budget: float = 8.0
    #: the instance's default validity of a message (seconds from sending): a pending
    #: message gets one poll just after it ends, when neither the provider's answer nor
    #: the registration gives a ``ttl`` of its own (None: no deadline poll)
    ttl: float | None = None

    def step(self, polls_done: int) -> float:
        """The wait before the next poll, after ``polls_done`` answered polls."""
        schedule = self.push_schedule if self.push_first else self.schedule
        return schedule[min(polls_done, len(schedule) - 1)]

    @property
    def planned(self) -> bool:
        """Whether polls follow an adaptive plan (once learned): ``schedule = "adaptive"``
        on an instance that is not push-first (that one polls on ``push_schedule``)."""
        return self.adaptive and not self.push_first

    def first_wait(self) -> float:
        """The wait before a new message's first poll (an adaptive plan may say less:
        ``accounting.Policy``)."""
        return self.step(0)


@dataclass(frozen=True)
class MetricsSettings:
    latency_buckets: tuple[float, ...] = tuple(float(b) for b in DEFAULT_BUCKETS)
    extra_labels: tuple[str, ...] = ()
    #: the declared message labels (``[metrics.labels.NAME]``)
    labels: LabelSettings = field(default_factory=LabelSettings)


@dataclass(frozen=True)
class ProviderConfig:
    """One ``[providers.<name>]`` table: the common keys plus the plugin's own settings."""

    name: str
    plugin: str
    type: ProviderType
    enabled: bool
    concurrency: int
    rate_limit: float
    timeout: float
    polling: PollingSettings
    callback_token: Secret | None
    settings: Any


@dataclass(frozen=True)
class Config:
    exporter: ExporterSettings
    polling: PollingSettings
    metrics: MetricsSettings
    providers: Mapping[str, ProviderConfig] = field(default_factory=lambda: MappingProxyType({}))
    path: Path | None = None
