"""viber-exporter: Prometheus metrics for the fate of Viber business messages.

Plugin authors need only what this module re-exports::

    from exporter import hookimpl, Provider, Observation, Status, Outcome, FetchError
"""

from .configtable import ConfigTable
from .hookspecs import hookimpl
from .model import Fallback, FetchError, Observation, Outcome, Status, snake_case
from .provider import CallbackNotSupported, InvalidCallback, Provider
from .version import __version__

__all__ = [
    "CallbackNotSupported",
    "ConfigTable",
    "Fallback",
    "FetchError",
    "InvalidCallback",
    "Observation",
    "Outcome",
    "Provider",
    "Status",
    "__version__",
    "hookimpl",
    "snake_case",
]
