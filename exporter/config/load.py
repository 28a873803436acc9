"""``config.toml`` → validated, immutable settings (SPEC §5).

Everything wrong is collected and raised together as one :class:`ConfigError`,
each problem with its key path. ``${VAR}`` / ``${VAR:-default}`` are substituted in
every string first; secrets are :class:`~exporter.secrets.Secret` objects.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..configtable import ConfigTable, Problems
from ..durations import parse_duration
from ..errors import ConfigError
from ..labels import (
    DEFAULT_MAX_COMBINATIONS,
    DEFAULT_MAX_VALUES,
    MAX_DECLARED,
    MAX_MAX_VALUES,
    NAME,
    OTHER,
    RESERVED,
    SERIES_CEILING,
    DeclaredLabel,
    LabelSettings,
    outcome_series,
)
from ..provider import ProviderType
from ..secrets import Secret
from .model import (
    DEFAULT_BUCKETS,
    Config,
    ExporterSettings,
    MetricsSettings,
    PollingSettings,
    ProviderConfig,
    ServerLimits,
    TlsSettings,
)

# Dense while deliveries and most reads come, then growing by about half each step to
# 4 h: half the calls of the old 30 m cap on the reference workload, with delivery
# detection p95 under 30 s (bench/calls_per_message.py, docs/benchmarks.md).
DEFAULT_SCHEDULE = (
    *("10s", "20s", "30s", "30s", "1m", "2m", "3m", "5m", "8m", "12m"),
    *("20m", "30m", "45m", "1h", "90m", "2h", "3h", "4h"),
)
DEFAULT_PUSH_SCHEDULE = ("30s", "2m", "10m", "1h", "4h")
ADAPTIVE = "adaptive"  # schedule = "adaptive": planned from the learned delays
EXTRA_LABELS = ("country",)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
INSTANCE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
CONFIG_ENV = "VIBER_EXPORTER_CONFIG"
DEFAULT_CONCURRENCY = 8  # a plugin's default_concurrency / default_rate_limit replace these
DEFAULT_RATE_LIMIT = 10.0


# -- loading ----------------------------------------------------------------------------


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(CONFIG_ENV) or "config.toml")


def load_config(
    path: Path,
    provider_types: Mapping[str, ProviderType],
    environ: Mapping[str, str] = os.environ,
    *,
    failed_plugins: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate the file at ``path``; raise ConfigError listing every problem.

    ``failed_plugins`` (name → error) explains a table whose plugin could not load.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError([("", f"cannot read {str(path)!r}: {e.strerror or e}")]) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            [("", f"{str(path)!r} is not UTF-8 text: byte 0x{data[e.start]:02x} on line {line}")]
        ) from e
    return parse_config(text, provider_types, environ, path=path, failed_plugins=failed_plugins)


def parse_config(
    text: str,
    provider_types: Mapping[str, ProviderType],
    environ: Mapping[str, str] = os.environ,
    *,
    path: Path | None = None,
    failed_plugins: Mapping[str, str] | None = None,
) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"not valid TOML: {e}")]) from e
    except RecursionError as e:  # arrays nested a thousand deep
        raise ConfigError([("", "not valid TOML: nested too deeply")]) from e
    problems = Problems()
    document = substitute_env(document, "", environ, problems)
    base_dir = path.parent if path is not None else Path(".")
    root = ConfigTable(document, "", problems, base_dir)
    config = _build(root, provider_types, path, failed_plugins or {})
    root.finish()
    if problems:
        raise ConfigError(problems.items)
    return config


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, path: str, environ: Mapping[str, str], problems: Problems) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed TOML value."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            current = environ.get(name)
            if current:
                return current
            if default is not None:
                return default
            if current is None:
                problems.add(path, f"environment variable {name} is not set")
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {
            k: substitute_env(v, f"{path}.{k}" if path else k, environ, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(value)]
    return value


def _build(
    root: ConfigTable,
    provider_types: Mapping[str, ProviderType],
    path: Path | None,
    failed_plugins: Mapping[str, str],
) -> Config:
    exporter = _exporter(root.child("exporter"), root.base_dir)
    polling = _polling(root.child("polling"))
    metrics = _metrics(root.child("metrics"))
    providers_table = root.child("providers")
    providers = {}
    for name in providers_table.data:
        table = providers_table.child(name)
        if not re.fullmatch(INSTANCE_NAME, name):
            providers_table.problem(
                name,
                "instance names are 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        provider = _provider(name, table, polling, provider_types, failed_plugins)
        table.finish()
        if provider is not None:
            providers[name] = provider
    if not providers_table.data:
        root.problem("providers", "configure at least one provider instance ([providers.<name>])")
    return Config(exporter, polling, metrics, MappingProxyType(providers), path)


def _exporter(table: ConfigTable, base_dir: Path) -> ExporterSettings:
    host, port = _listen(table, table.string("listen", "0.0.0.0:9839"))
    state = table.string("state_path", "viber-exporter.db")
    state_path = Path(state) if Path(state).is_absolute() else base_dir / state
    if not table.has("state_url"):
        problem = _unwritable(state_path)
        if problem:
            table.problem("state_path", problem)
    settings = ExporterSettings(
        listen_host=host,
        listen_port=port,
        state_path=state_path,
        api_token=table.secret("api_token", required=False),
        log_level=table.string("log_level", "info", choices=LOG_LEVELS),
        log_format=table.string("log_format", "text", choices=LOG_FORMATS),
        tls=_tls(table, base_dir),
        basic_auth_users=_basic_auth_users(table),
        state_url=_state_url(table),
        server=_server_limits(table),
        replica_name=table.string(
            "replica_name",
            "",
            pattern=r"[^\x00-\x1f\x7f#]{0,100}",
            hint="must be at most 100 characters, without control characters or '#'",
        ).strip()
        or None,
    )
    table.finish()
    return settings


def _server_limits(table: ConfigTable) -> ServerLimits:
    default = ServerLimits()
    return ServerLimits(
        threads=table.integer("threads", default.threads, minimum=1, maximum=256),
        max_connections=table.integer(
            "max_connections", default.max_connections, minimum=1, maximum=100_000
        ),
        idle_timeout=table.duration("idle_timeout", default.idle_timeout),
        body_timeout=table.duration("body_timeout", default.body_timeout),
    )


def _unwritable(path: Path) -> str | None:
    """Why this process could not create or write the SQLite file, or None. Its
    directory (or the nearest one that exists) must be a writable directory: the store
    writes its journal and lock file beside it."""
    if path.is_dir():
        return f"{str(path)!r} is a directory; name a file in it"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{str(ancestor)!r} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (
            f"the directory {str(ancestor)!r} is not writable by this user "
            "(under the shipped systemd unit, state belongs in $STATE_DIRECTORY)"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{str(path)!r} is not readable and writable by this user"
    return None


def _state_url(table: ConfigTable) -> Secret | None:
    url = table.secret("state_url", required=False)
    if url is None:
        return None
    from ..store.location import url_problem

    problem = url_problem(url.reveal())
    if problem:
        table.problem("state_url", problem)
        return None
    return url


def _readable(table: ConfigTable, key: str, base_dir: Path) -> Path | None:
    name = table.string(key, "")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else base_dir / name
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        table.problem(key, f"cannot read {str(path)!r}: {e.strerror or e}")
    return path


def _tls(table: ConfigTable, base_dir: Path) -> TlsSettings | None:
    cert = _readable(table, "tls_cert_file", base_dir)
    key = _readable(table, "tls_key_file", base_dir)
    client_ca = _readable(table, "tls_client_ca_file", base_dir)
    if (cert is None) != (key is None):
        table.problem(
            "tls_cert_file" if cert is None else "tls_key_file",
            "TLS needs both tls_cert_file and tls_key_file",
        )
        return None
    if client_ca is not None and cert is None:
        table.problem("tls_client_ca_file", "mutual TLS needs tls_cert_file and tls_key_file too")
    if cert is None or key is None:
        return None
    return TlsSettings(cert, key, client_ca)


BCRYPT_HASH = r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"


def _basic_auth_users(table: ConfigTable) -> Mapping[str, Secret]:
    users = table.child("basic_auth_users")
    result = {}
    for user in users.data:
        value = users.raw(user)
        if not isinstance(value, str) or not re.fullmatch(BCRYPT_HASH, value):
            # Never echo the value: it may be a password pasted where a hash belongs.
            users.problem(
                user,
                'must be a bcrypt hash (e.g. from `htpasswd -nbBC 10 "" PASSWORD`), not a password',
            )
            continue
        result[user] = Secret(value)
    return MappingProxyType(result)


def split_listen(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::]:9839`` for IPv6; an empty host is every address) as host
    and port, or None when it is not one."""
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})", value)
    if not match or not 0 <= int(match.group(3)) <= 65535:
        return None
    return match.group(1) or match.group(2) or "0.0.0.0", int(match.group(3))


LISTEN_HINT = 'must be HOST:PORT like "0.0.0.0:9839" or "[::]:9839"'


def _listen(table: ConfigTable, value: str) -> tuple[str, int]:
    address = split_listen(value)
    if address is None:
        if value:
            table.problem("listen", f"{LISTEN_HINT}, got {value!r}")
        return "0.0.0.0", 9839
    return address


def _schedule(
    table: ConfigTable, inherited: tuple[tuple[float, ...], bool]
) -> tuple[tuple[float, ...], bool]:
    """``schedule``: a list of durations, or "adaptive" (then the inherited steps, at the
    top the fixed default, are followed until there is enough to learn from). Returns
    (steps, adaptive)."""
    if not table.has("schedule"):
        table.ignore("schedule")
        return inherited
    if table.data["schedule"] == ADAPTIVE:
        table.ignore("schedule")
        return inherited[0], True
    if isinstance(table.data["schedule"], str):
        table.raw("schedule")
        table.problem(
            "schedule",
            f'must be a list of durations or "{ADAPTIVE}", got {table.data["schedule"]!r}',
        )
        return inherited
    return table.durations("schedule"), False


def _polling(table: ConfigTable) -> PollingSettings:
    schedule, adaptive = _schedule(
        table, (tuple(parse_duration(s) for s in DEFAULT_SCHEDULE), False)
    )
    settings = PollingSettings(
        tick=table.duration("tick", "5s"),
        schedule=schedule,
        adaptive=adaptive,
        adaptive_budget=table.number("adaptive_budget", 8.0, minimum=1.0),
        max_age=table.duration("max_age", "48h"),
        read_window=table.duration("read_window", "24h", positive=False),
        not_found_grace=table.duration("not_found_grace", "10m", positive=False),
        retention=table.duration("retention", "7d", positive=False),
        max_watched=table.integer("max_watched", 1_000_000, minimum=1),
        final_look_grace=table.duration("final_look_grace", "1h", positive=False),
        push_schedule=table.durations("push_schedule", DEFAULT_PUSH_SCHEDULE),
    )
    table.finish()
    return settings


def _metrics(table: ConfigTable) -> MetricsSettings:
    raw = table.raw("latency_buckets", list(DEFAULT_BUCKETS))
    buckets: tuple[float, ...] = tuple(float(b) for b in DEFAULT_BUCKETS)
    if (
        isinstance(raw, list)
        and raw
        and all(isinstance(b, int | float) and not isinstance(b, bool) and b > 0 for b in raw)
        and list(raw) == sorted(set(raw))
    ):
        buckets = tuple(float(b) for b in raw)
    else:
        table.problem(
            "latency_buckets", "must be a non-empty list of increasing positive numbers of seconds"
        )
    extra = table.string_list("extra_labels", [], choices=EXTRA_LABELS)
    labels = _labels(table)
    series = outcome_series(labels, len(buckets), "country" in extra)
    if series > SERIES_CEILING:
        table.problem(
            "labels",
            f"the declared labels could make {series:,} series of the outcome metrics per "
            f"provider instance, over the ceiling of {SERIES_CEILING:,}: declare fewer "
            "labels or values, or lower max_label_combinations",
        )
    settings = MetricsSettings(buckets, extra, labels)
    table.finish()
    return settings


def _labels(metrics: ConfigTable) -> LabelSettings:
    """``[metrics.labels.NAME]`` tables (``values``, ``max_values``) and
    ``metrics.max_label_combinations``."""
    combinations = metrics.integer(
        "max_label_combinations", DEFAULT_MAX_COMBINATIONS, minimum=1, maximum=100_000
    )
    tables = metrics.child("labels")
    declared = []
    for name in tables.data:
        table = tables.child(name)
        if not NAME.fullmatch(name) or name.startswith("__"):
            tables.problem(
                name, "a label name is letters, digits and '_', not starting with a digit or '__'"
            )
        elif name in RESERVED:
            tables.problem(
                name, f"the exporter's own metrics use the label {name!r}: choose another name"
            )
        values = None
        if table.has("values"):
            listed = table.string_list("values", [])
            values = tuple(dict.fromkeys(listed))
            if OTHER in values or "" in values:
                table.problem("values", f'"{OTHER}" and "" are the exporter\'s own values')
            if len(values) > MAX_MAX_VALUES:
                table.problem("values", f"at most {MAX_MAX_VALUES} values")
        max_values = table.integer(
            "max_values", DEFAULT_MAX_VALUES, minimum=1, maximum=MAX_MAX_VALUES
        )
        table.finish()
        declared.append(DeclaredLabel(name, values, max_values))
    if len(declared) > MAX_DECLARED:
        metrics.problem("labels", f"at most {MAX_DECLARED} labels, got {len(declared)}")
    return LabelSettings(tuple(declared[:MAX_DECLARED]), combinations)


def _provider(
    name: str,
    table: ConfigTable,
    polling: PollingSettings,
    provider_types: Mapping[str, ProviderType],
    failed_plugins: Mapping[str, str],
) -> ProviderConfig | None:
    plugin = table.string("plugin")
    provider_type = provider_types.get(plugin) if plugin else None
    cls = provider_type.cls if provider_type is not None else None
    enabled = table.boolean("enabled", True)
    concurrency = table.integer(
        "concurrency",
        (cls.default_concurrency if cls else None) or DEFAULT_CONCURRENCY,
        minimum=1,
        maximum=256,
    )
    rate_limit = table.number(
        "rate_limit", (cls.default_rate_limit if cls else None) or DEFAULT_RATE_LIMIT, positive=True
    )
    timeout = table.duration("timeout", "10s")
    schedule, adaptive = _schedule(table, (polling.schedule, polling.adaptive))
    own = PollingSettings(
        tick=table.duration("tick", polling.tick),
        schedule=schedule,
        adaptive=adaptive,
        adaptive_budget=table.number("adaptive_budget", minimum=1.0)
        if table.has("adaptive_budget")
        else polling.adaptive_budget,
        max_age=polling.max_age,
        read_window=polling.read_window,
        not_found_grace=polling.not_found_grace,
        retention=polling.retention,
        max_watched=polling.max_watched,
        final_look_grace=polling.final_look_grace,
        push_first=table.boolean("push_first", False),
        push_schedule=table.durations("push_schedule", polling.push_schedule)
        if table.has("push_schedule")
        else polling.push_schedule,
        ttl=table.duration("ttl") if table.has("ttl") else None,
    )
    table.ignore("push_schedule", "adaptive_budget", "ttl")
    callback_token = table.secret("callback_token", required=False)
    if own.push_first and callback_token is None and not (cls and cls.signs_callbacks()):
        table.problem(
            "push_first",
            "needs callback_token: with push_first, pushed reports are how messages settle",
        )
    if own.push_first and cls is not None and not cls.capabilities().lookup:
        table.problem("push_first", f"plugin {plugin!r} does not poll: it is push-only already")
    if provider_type is None:
        if plugin in failed_plugins:
            table.problem(
                "plugin",
                f"plugin {plugin!r} is installed but failed to load: {failed_plugins[plugin]}",
            )
        elif plugin:
            known = ", ".join(sorted(provider_types)) or "none"
            broken = (
                f"; failed to load: {', '.join(sorted(failed_plugins))}" if failed_plugins else ""
            )
            table.problem(
                "plugin", f"no installed plugin provides {plugin!r} (available: {known}{broken})"
            )
        table.ignore(*table.data)  # the plugin's own keys cannot be checked without it
        return None
    try:
        settings = provider_type.cls.parse_settings(table)
    except Exception as e:  # a plugin bug must read as a config problem, not a traceback
        table.problem(
            "plugin", f"plugin {plugin!r} failed to validate its settings: {type(e).__name__}"
        )
        return None
    return ProviderConfig(
        name,
        plugin,
        provider_type,
        enabled,
        concurrency,
        rate_limit,
        timeout,
        own,
        callback_token,
        settings,
    )
