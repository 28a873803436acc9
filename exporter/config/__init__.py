"""The configuration: ``config.toml`` read and checked (:mod:`.load`) into frozen
settings (:mod:`.model`).

``load_config`` and ``parse_config`` are loaded on first use (PEP 562), so importing
the settings alone (``viber_exporter.config.model``) pulls in no plugin machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["default_config_path", "load_config", "parse_config"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'viber_exporter.config' has no attribute {name!r}")
    return getattr(importlib.import_module(".load", __name__), name)
