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
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .events import StatusChanged
from .provider import Provider, ProviderType
from .version import PLUGIN_API_VERSION, __version__

log = logging.getLogger(__name__)

#: Built-in plugins, registered through the same call as installed ones.
DEFAULT_PLUGINS: tuple[str, ...] = ("viber_exporter.plugins.routee", "viber_exporter.plugins.bsg")
HOOK_QUEUE_SIZE = 10_000

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
        self._trace_log = logging.getLogger("viber_exporter.plugins.trace")

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
        unknown = self._unknown_hooks(plugin)
        if unknown:
            # Written for a newer viber-exporter, or a misspelled hook: either way its
            # hooks would not be called as its author meant. Disable it, start the rest.
            self.pm.unregister(plugin)
            error = (
                f"implements hook(s) this viber-exporter does not know: {', '.join(unknown)} "
                f"(plugin API {PLUGIN_API_VERSION}; written for a newer version, or misspelled?)"
                "; the plugin is disabled"
            )
            log.error("plugin %s %s", name, error)
            self._origins[name] = _Origin(package, version, builtin, error=error)
            return
        self._origins[name] = _Origin(package, version, builtin)
        self._provider_types = None

    def _unknown_hooks(self, plugin: object) -> list[str]:
        return sorted(
            caller.name
            for caller in self.pm.get_hookcallers(plugin) or []
            if caller.spec is None
            and any(
                impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()
            )
        )

    def load(self, environ: Mapping[str, str] = os.environ) -> None:
        """Register the built-in plugins and the installed ones the environment allows."""
        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            self.register(
                module, module_name, package="viber-exporter", version=__version__, builtin=True
            )
        self._load_entry_points(environ.get(LOAD_PLUGINS_ENV))
        self.pm.check_pending()  # cannot raise: register() disabled plugins with unknown hooks
        if environ.get(TRACE_PLUGINS_ENV, "") not in ("", "0"):
            self.enable_tracing()

    def _load_entry_points(self, allowed_text: str | None) -> None:
        allowed = (
            None
            if allowed_text is None
            else {part.strip() for part in allowed_text.split(",") if part.strip()}
        )
        matched: set[str] = set()
        for ep in entry_points(group=hookspecs.PROJECT_NAME):
            package = ep.dist.name if ep.dist else ep.module
            version = ep.dist.version if ep.dist else "unknown"
            if allowed is not None and ep.name not in allowed and package not in allowed:
                continue
            matched |= {ep.name, package}
            try:
                plugin = ep.load()
            except Exception as e:  # import errors in third-party code are reported, not fatal
                log.error("plugin %s (%s) failed to import: %s", ep.name, package, e)
                self._origins[ep.name] = _Origin(
                    package, version, False, error=f"import failed: {e}"
                )
                continue
            self.register(plugin, ep.name, package=package, version=version, builtin=False)
        # A name in the allow-list that nothing installed answers to is a typo or a
        # missing package: said, and listed with the plugins that did not load.
        for name in sorted((allowed or set()) - matched):
            log.error(
                "%s names %r, but no installed plugin or package has that name",
                LOAD_PLUGINS_ENV,
                name,
            )
            self._origins[name] = _Origin(
                "unknown", "unknown", False, error=f"not installed (named in {LOAD_PLUGINS_ENV})"
            )

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

    def status_hook(self, on_drop: Callable[[], None]) -> StatusHook:
        """A worker that calls ``message_status_changed`` off the polling thread."""
        return StatusHook(self.pm, on_drop)


class StatusHook:
    """Calls ``message_status_changed`` through pluggy on a thread of its own.

    Changes wait in a bounded queue; when it is full (a slow implementation), new ones
    are dropped and ``on_drop`` counts them, so polling never waits for a plugin.
    """

    def __init__(
        self, pm: pluggy.PluginManager, on_drop: Callable[[], None], size: int = HOOK_QUEUE_SIZE
    ) -> None:
        self._hook = pm.hook.status_changed
        self._hook_1_0 = pm.hook.message_status_changed  # the same change, as 11 arguments
        self._on_drop = on_drop
        self._queue: queue.Queue[StatusChanged | None] = queue.Queue(size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, event: StatusChanged) -> None:
        if not self._hook.get_hookimpls() and not self._hook_1_0.get_hookimpls():
            return  # nobody listens: no thread, no queue
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="status-hook", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._on_drop()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued change has been handed to the hook (for tests)."""
        done = threading.Event()

        def wait_for_queue() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait_for_queue, daemon=True).start()
        return done.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)

    def _call(self, event: StatusChanged) -> None:
        """Both hooks, each on its own: one failing does not keep the change from the other."""
        if self._hook.get_hookimpls():
            try:
                self._hook(change=event)
            except Exception:
                log.exception("a status_changed implementation failed")
        if self._hook_1_0.get_hookimpls():
            arguments = asdict(event)
            del arguments["labels"]  # not among the 1.0 hook's arguments
            arguments["old_status"] = event.old_status.value
            arguments["new_status"] = event.new_status.value
            try:
                self._hook_1_0(**arguments)
            except Exception:
                log.exception("a message_status_changed implementation failed")

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._call(event)
            finally:
                self._queue.task_done()
