"""Every hook a viber-exporter plugin can implement (plugin API 1.3).

Plugins write ``from viber_exporter import hookimpl`` and decorate module-level
functions (or methods of an object) named like the specs below. Hooks receive keyword
arguments; an implementation takes only the ones it needs, so arguments can be added
in a minor version without breaking anyone. A deprecated hook is marked with pluggy's
``warn_on_impl``, warns every plugin that implements it for one major version, and is
then removed (docs/plugins.md, "Compatibility").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .events import StatusChanged
    from .provider import Provider

PROJECT_NAME = "viber_exporter"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register the provider classes this plugin offers.

    Called once at start-up, for every plugin. Call ``register(cls)`` for each
    :class:`~viber_exporter.Provider` subclass; ``cls.plugin_name`` is the value a
    config table's ``plugin = "..."`` uses to pick it. Two classes registering the same
    name is an error that names both plugins.

    :param register: callback taking one provider class. New keyword arguments may be
        added to it later, so call it with the class only.
    """


@hookspec
def status_changed(change: StatusChanged) -> None:
    """(1.3) React to a message entering a new normalised status.

    Called once per change with one :class:`~viber_exporter.StatusChanged` object,
    after the change is stored and counted, through pluggy on a worker thread of its
    own: polling never waits for it. Changes queue up to a bound; beyond it they are
    dropped and counted in ``viber_plugin_hook_events_dropped_total``. An exception is
    logged; as everywhere in pluggy, it ends that call for the implementations not yet
    called, so do not raise. The object gains fields in minor versions, never loses
    one: prefer this hook to :func:`message_status_changed`, which it replaces in 2.0.

    :param change: what changed, e.g. ``change.new_status == "delivered"``,
        ``change.latency_seconds``, ``change.labels``.
    """


@hookspec
def message_status_changed(
    provider: str,
    message_id: str,
    old_status: str,
    new_status: str,
    reason: str | None,
    provider_status: str | None,
    price: float | None,
    currency: str | None,
    latency_seconds: float | None,
    country: str | None,
    at: float,
) -> None:
    """React to a message entering a new normalised status (the hook of 1.0; since
    1.3 :func:`status_changed` takes the same change as one object).

    Called once per change, after the change is stored and counted, through pluggy
    (so hook wrappers and ``VIBER_EXPORTER_TRACE_PLUGINS`` see it) on a worker thread
    of its own: polling never waits for it. Changes queue up to a bound; beyond it they
    are dropped and counted in ``viber_plugin_hook_events_dropped_total``. An exception
    is logged; as everywhere in pluggy, it ends that call for the implementations not
    yet called, so do not raise.

    :param provider: the provider instance name (the ``provider`` label).
    :param message_id: the provider's id of the message.
    :param old_status: the status before, e.g. ``"pending"``.
    :param new_status: the status now, e.g. ``"delivered"``.
    :param reason: snake_case reason for ``failed``/``expired``/``unknown``, else None.
    :param provider_status: the provider's own status text, e.g. ``"DELIVERED"``.
    :param price: the Viber leg's price so far, or None when not reported yet.
    :param currency: the price's ISO 4217 currency, or None.
    :param latency_seconds: for ``delivered`` and ``read``: seconds since the message
        was sent, as counted in the latency histograms; else None.
    :param country: the recipient's country code when the provider gives one, else None.
    :param at: when the change was recorded (epoch seconds).
    """
