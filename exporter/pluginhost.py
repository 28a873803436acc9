"""The plugin host: one pluggy PluginManager holding built-in and installed plugins.

Built-in plugins are ordinary modules listed in :data:`DEFAULT_PLUGINS`; installed
ones come from the ``viber_exporter`` entry-point group. Both go through
:meth:`PluginHost.register`, so a built-in plugin is registered exactly like a
third-party one.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .provider import Provider
from .version import __version__

log = logging.getLogger(__name__)

#: Built-in plugins, registered through the same call as installed ones.
DEFAULT_PLUGINS: tuple[str, ...] = ("plugins.routee", "plugins.bsg")

LOAD_PLUGINS_ENV = "VIBER_EXPORTER_LOAD_PLUGINS"
TRACE_PLUGINS_ENV = "VIBER_EXPORTER_TRACE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """What ``viber-exporter plugins`` reports about one plugin."""

    name: str
    package: str
    version: str
    builtin: bool
    error: str | None = None
    providers: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderType:
    """A registered provider class and the plugin it came from."""

    cls: type[Provider]
    plugin: str
    package: str
    version: str


@dataclass
class _Origin:
    package: str
    version: str
    builtin: bool
    error: str | None = None
    providers: list[str] = field(default_factory=list)


class PluginHost:
    """Loads plugins and collects the provider classes they register."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._origins: dict[str, _Origin] = {}
        self._provider_types: dict[str, ProviderType] | None = None
        self._tracing = False
        self._trace_log = logging.getLogger("exporter.plugins.trace")

    # -- loading --------------------------------------------------------------------
    def register(
        self, plugin: ModuleType | object, name: str, *, package: str, version: str, builtin: bool
    ) -> None:
        """The one registration call used for built-in, installed and test plugins."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as e:  # a broken plugin must not stop the exporter
            log.error("plugin %s could not be registered: %s", name, e)
            self._origins[name] = _Origin(package, version, builtin, error=str(e))
            return
        self._origins[name] = _Origin(package, version, builtin)
        self._provider_types = None

    def load(self, environ: Mapping[str, str] = os.environ) -> None:
        """Register the built-in plugins and the installed ones the environment allows."""
        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            self.register(
                module, module_name, package="viber-exporter", version=__version__, builtin=True
            )
        self._load_entry_points(environ.get(LOAD_PLUGINS_ENV))
        self.pm.check_pending()
        if environ.get(TRACE_PLUGINS_ENV, "") not in ("", "0"):
            self.enable_tracing()

    def _load_entry_points(self, allowed_text: str | None) -> None:
        allowed = (
            None
            if allowed_text is None
            else {part.strip() for part in allowed_text.split(",") if part.strip()}
        )
        for ep in entry_points(group=hookspecs.PROJECT_NAME):
            package = ep.dist.name if ep.dist else ep.module
            version = ep.dist.version if ep.dist else "unknown"
            if allowed is not None and ep.name not in allowed and package not in allowed:
                continue
            try:
                plugin = ep.load()
            except Exception as e:  # import errors in third-party code are reported, not fatal
                log.error("plugin %s (%s) failed to import: %s", ep.name, package, e)
                self._origins[ep.name] = _Origin(
                    package, version, False, error=f"import failed: {e}"
                )
                continue
            self.register(plugin, ep.name, package=package, version=version, builtin=False)

    def enable_tracing(self) -> None:
        """Log every hook call and its result at DEBUG (``VIBER_EXPORTER_TRACE_PLUGINS=1``)."""
        self._tracing = True
        self.pm.trace.root.setwriter(lambda text: self._trace_log.debug("%s", text.rstrip()))
        self.pm.enable_tracing()

    # -- providers ------------------------------------------------------------------
    def provider_types(self) -> dict[str, ProviderType]:
        """Every provider class by plugin name; raises PluginError on a name clash."""
        if self._provider_types is not None:
            return self._provider_types
        found: dict[str, ProviderType] = {}
        plugins = self.pm.get_plugins()
        for impl in self.pm.hook.register_providers.get_hookimpls():
            name = impl.plugin_name
            origin = self._origins.setdefault(name, _Origin("unknown", "unknown", False))
            # Call each plugin alone (through pluggy, so tracing sees it) to know who registered what.
            caller = self.pm.subset_hook_caller(
                "register_providers", remove_plugins=[p for p in plugins if p is not impl.plugin]
            )

            def register(
                cls: type[Provider], *, _name: str = name, _origin: _Origin = origin
            ) -> None:
                self._add_provider(found, cls, _name, _origin)

            try:
                caller(register=register)
            except PluginError:
                raise
            except Exception as e:  # a broken plugin is listed as failed, not fatal
                log.error("plugin %s failed in register_providers: %s", name, e)
                origin.error = f"register_providers failed: {e}"
        self._provider_types = found
        return found

    def _add_provider(
        self, found: dict[str, ProviderType], cls: Any, plugin: str, origin: _Origin
    ) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise PluginError(
                f"plugin {plugin} registered {cls!r}, which is not a Provider subclass"
            )
        key = getattr(cls, "plugin_name", None)
        if not isinstance(key, str) or not key:
            raise PluginError(f"plugin {plugin}: {cls.__name__} has no plugin_name")
        if key in found:
            raise PluginError(
                f"provider name {key!r} is registered twice: by plugin {found[key].plugin} "
                f"and by plugin {plugin}"
            )
        found[key] = ProviderType(cls, plugin, origin.package, origin.version)
        origin.providers.append(key)

    def failures(self) -> dict[str, str]:
        """Plugins that failed at import or registration: name → error."""
        return {name: origin.error for name, origin in self._origins.items() if origin.error}

    def describe(self, *, include_builtin: bool) -> list[PluginInfo]:
        """Plugins with their package, version, hooks and provider names."""
        self.provider_types()
        infos = []
        for name, origin in sorted(self._origins.items()):
            if origin.builtin and not include_builtin:
                continue
            plugin = self.pm.get_plugin(name)
            hooks = tuple(
                sorted(
                    caller.name
                    for caller in (self.pm.get_hookcallers(plugin) or [])
                    if plugin is not None
                )
            )
            infos.append(
                PluginInfo(
                    name,
                    origin.package,
                    origin.version,
                    origin.builtin,
                    origin.error,
                    tuple(origin.providers),
                    hooks,
                )
            )
        return infos

    def notify_status_changed(self, **kwargs: Any) -> None:
        """Call every ``message_status_changed`` implementation on its own, so one that
        raises is logged and does not keep the others from hearing about the change."""
        for impl in self.pm.hook.message_status_changed.get_hookimpls():
            if self._tracing:
                self._trace_log.debug("message_status_changed %r -> %s", kwargs, impl.plugin_name)
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception:
                log.exception("plugin %s failed in message_status_changed", impl.plugin_name)
