"""Reloading the configuration without a restart (SIGHUP or ``POST /-/reload``).

A valid new configuration is applied as a whole: provider instances added, removed or
changed; the watched set, the counters and unchanged instances (with their health and
pacing) survive. An invalid one — or one whose new provider instance cannot be built —
changes nothing, logs every problem, and shows in
``viber_exporter_config_last_reload_successful``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .config.load import load_config
from .config.model import Config
from .engine import Exporter, ReloadOutcome
from .errors import ConfigError, PluginError
from .pluginhost import PluginHost
from .secrets import redact

log = logging.getLogger(__name__)


class Reloader:
    def __init__(
        self,
        exporter: Exporter,
        host: PluginHost,
        path: Path,
        adjust: Callable[[Config], Config] = lambda config: config,
    ) -> None:
        self.exporter = exporter
        self.host = host
        self.path = path
        #: the command line's overrides (``run --listen``), applied to every reload too
        self.adjust = adjust
        self._lock = threading.Lock()

    def reload(self) -> ReloadOutcome:
        """Re-read the config file and apply it, or change nothing and say why."""
        with self._lock:
            try:
                config = self.adjust(
                    load_config(
                        self.path, self.host.provider_types(), failed_plugins=self.host.failures()
                    )
                )
                outcome = self.exporter.reload(config)
            except (ConfigError, PluginError) as e:
                problems = e.problems if isinstance(e, ConfigError) else [("", str(e))]
                outcome = ReloadOutcome(problems=tuple(problems))
            except Exception as e:  # a reload never takes the process down
                log.exception("reload failed unexpectedly; the running configuration is kept")
                outcome = ReloadOutcome(problems=(("", redact(f"reload failed: {e!r}")[:300]),))
            metrics = self.exporter.metrics
            if outcome.problems:
                for key, message in outcome.problems:
                    log.error("reload refused: %s%s", f"{key}: " if key else "", message)
                metrics.reload_successful.set(0)
                return outcome
            metrics.reload_successful.set(1)
            metrics.reload_success_time.set(self.exporter.clock.time())
            log.info("configuration reloaded from %s", self.path)
            return outcome
