"""viber-exporter: Prometheus metrics for the fate of Viber business messages.

This module is the plugin API, version :data:`PLUGIN_API_VERSION`: everything a provider
plugin needs is importable from here, and nothing else is promised to plugins::

    from viber_exporter import Observation, Provider, Status, hookimpl

Names are loaded on first use (PEP 562), so importing a core module such as
``viber_exporter.accounting`` does not drag in pluggy or requests.
``docs/plugins.md`` documents each name and the compatibility policy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import PLUGIN_API_VERSION, __version__

#: public name → the module that defines it
_EXPORTS: dict[str, str] = {
    # hooks
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    # the provider interface
    "Provider": "provider",
    "Balance": "provider",
    "CallbackNotSupported": "provider",
    "InvalidCallback": "callbacks",
    "CallbackRequest": "callbacks",
    "CallbackReply": "callbacks",
    "Report": "model",
    "BadReport": "model",
    "Capabilities": "provider",
    "StatusChanged": "events",
    "Page": "model",
    "MessageRef": "model",
    "Observation": "model",
    "Fallback": "model",
    "Status": "model",
    "Outcome": "model",
    "FetchError": "model",
    "snake_case": "model",
    "StatusMap": "statusmap",
    # settings
    "ConfigTable": "configtable",
    "Secret": "secrets",
    "Setting": "declarations",
    "Settings": "declarations",
    "read_settings": "declarations",
    "redact": "secrets",
    # HTTP and parsing helpers
    "ProviderHttp": "http",
    "json_body": "http",
    "raise_for_status": "http",
    "retry_after_seconds": "http",
    "outcome_for_status": "http",
    "describe_transport_error": "http",
    "ClientCredentials": "oauth",
    "TokenCache": "oauth",
    "field": "parsing",
    "invalid": "parsing",
    "iso_time": "parsing",
    "local_time": "parsing",
    "price": "parsing",
    "integer": "parsing",
    "country": "parsing",
    "Lenient": "parsing",
    # the contract test kit (needs the "testing" extra: pytest, pytest-httpserver)
    "ProviderContract": "testing.contract",
    # (1.3) a real exporter running a plugin, for its tests
    "run_exporter": "testing.harness",
    "serve": "testing.harness",
    "RunningExporter": "testing.harness",
}

__all__ = ["PLUGIN_API_VERSION", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'viber_exporter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from .callbacks import (
        CallbackReply as CallbackReply,
    )
    from .callbacks import (
        CallbackRequest as CallbackRequest,
    )
    from .callbacks import (
        InvalidCallback as InvalidCallback,
    )
    from .configtable import (
        ConfigTable as ConfigTable,
    )
    from .declarations import (
        Setting as Setting,
    )
    from .declarations import (
        Settings as Settings,
    )
    from .declarations import (
        read_settings as read_settings,
    )
    from .events import (
        StatusChanged as StatusChanged,
    )
    from .hookspecs import (
        hookimpl as hookimpl,
    )
    from .hookspecs import (
        hookspec as hookspec,
    )
    from .http import (
        ProviderHttp as ProviderHttp,
    )
    from .http import (
        describe_transport_error as describe_transport_error,
    )
    from .http import (
        json_body as json_body,
    )
    from .http import (
        outcome_for_status as outcome_for_status,
    )
    from .http import (
        raise_for_status as raise_for_status,
    )
    from .http import (
        retry_after_seconds as retry_after_seconds,
    )
    from .model import (
        BadReport as BadReport,
    )
    from .model import (
        Fallback as Fallback,
    )
    from .model import (
        FetchError as FetchError,
    )
    from .model import (
        MessageRef as MessageRef,
    )
    from .model import (
        Observation as Observation,
    )
    from .model import (
        Outcome as Outcome,
    )
    from .model import (
        Report as Report,
    )
    from .model import (
        Status as Status,
    )
    from .model import (
        snake_case as snake_case,
    )
    from .oauth import (
        ClientCredentials as ClientCredentials,
    )
    from .oauth import (
        TokenCache as TokenCache,
    )
    from .parsing import (
        Lenient as Lenient,
    )
    from .parsing import (
        country as country,
    )
    from .parsing import (
        field as field,
    )
    from .parsing import (
        integer as integer,
    )
    from .parsing import (
        invalid as invalid,
    )
    from .parsing import (
        iso_time as iso_time,
    )
    from .parsing import (
        local_time as local_time,
    )
    from .parsing import (
        price as price,
    )
    from .provider import (
        Balance as Balance,
    )
    from .provider import (
        CallbackNotSupported as CallbackNotSupported,
    )
    from .provider import (
        Capabilities as Capabilities,
    )
    from .provider import (
        Provider as Provider,
    )
    from .secrets import (
        Secret as Secret,
    )
    from .secrets import (
        redact as redact,
    )
    from .statusmap import (
        StatusMap as StatusMap,
    )
    from .testing.contract import (
        ProviderContract as ProviderContract,
    )
    from .testing.harness import (
        RunningExporter as RunningExporter,
    )
    from .testing.harness import (
        run_exporter as run_exporter,
    )
    from .testing.harness import (
        serve as serve,
    )
