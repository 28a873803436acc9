"""Reloading the configuration without a restart (SIGHUP or ``POST /-/reload``).

A valid new configuration is applied: provider instances added, removed or changed;
the watched set, the counters and unchanged instances (with their health) survive. An
invalid one changes nothing, logs every problem, and shows in
``viber_exporter_config_last_reload_successful``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .config import load_config
from .engine import Exporter
from .errors import ConfigError, PluginError
from .pluginhost import PluginHost

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, exporter: Exporter, host: PluginHost, path: Path) -> None:
        self.exporter = exporter
        self.host = host
        self.path = path
        self._lock = threading.Lock()

    def reload(self) -> list[tuple[str, str]]:
        """Re-read the config file; return its problems (empty when applied)."""
        with self._lock:
            try:
                config = load_config(
                    self.path, self.host.provider_types(), failed_plugins=self.host.failures()
                )
            except (ConfigError, PluginError) as e:
                problems = e.problems if isinstance(e, ConfigError) else [("", str(e))]
                for key, message in problems:
                    log.error("reload refused: %s%s", f"{key}: " if key else "", message)
                self.exporter.metrics.reload_successful.set(0)
                return problems
            self.exporter.reload(config)
            self.exporter.metrics.reload_successful.set(1)
            self.exporter.metrics.reload_success_time.set(self.exporter.clock.time())
            log.info("configuration reloaded from %s", self.path)
            return []
