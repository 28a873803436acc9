"""Every hook a viber-exporter plugin can implement.

Plugins write ``from exporter import hookimpl`` and decorate module-level functions
(or methods of an object) named like the specs below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .provider import Provider

PROJECT_NAME = "viber_exporter"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register the provider classes this plugin offers.

    Called once at start-up, for every plugin. Call ``register(cls)`` for each
    :class:`~exporter.provider.Provider` subclass; ``cls.plugin_name`` is the value a
    config table's ``plugin = "..."`` uses to pick it. Two classes registering the same
    name is an error that names both plugins.

    :param register: callback taking one provider class. New keyword arguments may be
        added to it later, so call it with the class only.
    """


@hookspec
def message_status_changed(
    provider: str, message_id: str, old_status: str, new_status: str, reason: str | None
) -> None:
    """React to a message entering a new normalised status.

    Called after the change is stored, once per change, from the poller's or the
    HTTP server's thread: return quickly and never block on the network. Exceptions
    are logged and otherwise ignored.

    :param provider: the provider instance name (the ``provider`` label).
    :param message_id: the provider's id of the message.
    :param old_status: the status before, e.g. ``"pending"``.
    :param new_status: the status now, e.g. ``"delivered"``.
    :param reason: snake_case reason for ``failed``/``expired``/``unknown``, else None.
    """
