"""One exception hierarchy; every message is written for the person running the exporter."""

from __future__ import annotations


class ViberExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


class PluginError(ViberExporterError):
    """A plugin could not be loaded, or two plugins claim the same provider name."""


class ConfigError(ViberExporterError):
    """The configuration has one or more problems; all of them are listed."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        count = len(problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n  " + "\n  ".join(lines))


class StoreError(ViberExporterError):
    """The state store could not be opened or written."""


class WatchedSetFull(ViberExporterError):
    """Registering these messages would exceed `polling.max_watched`."""


class Refused(ViberExporterError):
    """A request the engine turns down, with the HTTP status the API answers and, per
    bad item, what is wrong with it."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, object]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers or {}
