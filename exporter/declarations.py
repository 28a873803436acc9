"""Plugin settings declared as data: type, default, help text.

A provider class lists its keys in ``settings_spec``; ``check-config`` validates them
(every problem at once, with its key path), ``viber-exporter plugins --settings``
lists them, and the default ``Provider.parse_settings`` returns them as a read-only
:class:`Settings` object (``settings.api_key``). A plugin that needs checks across keys
overrides ``parse_settings`` and starts from ``read_settings(cls.settings_spec, table)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .configtable import MISSING, ConfigTable
from .durations import parse_duration

Kind = Literal["string", "secret", "url", "boolean", "integer", "number", "duration", "string_list"]
KINDS: tuple[Kind, ...] = (
    "string",
    "secret",
    "url",
    "boolean",
    "integer",
    "number",
    "duration",
    "string_list",
)


@dataclass(frozen=True)
class Setting:
    """One key of a provider table.

    ``default`` absent (the default) makes the key required. A ``secret`` also accepts
    ``<name>_file``; ``choices``/``pattern`` restrict strings; ``minimum``/``maximum``
    bound numbers.
    """

    name: str
    kind: Kind
    help: str
    default: Any = MISSING
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    hint: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name!r}: kind must be one of {', '.join(KINDS)}")
        if self.kind == "duration" and self.default is not MISSING:
            parse_duration(self.default)  # a plugin bug shows at import, not at run time

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def read(self, table: ConfigTable) -> Any:
        """Read this key from ``table``, recording any problem there."""
        default = self.default
        if self.kind == "secret":
            return table.secret(self.name, required=self.required)
        if self.kind == "string":
            return table.string(
                self.name, default, choices=self.choices, pattern=self.pattern, hint=self.hint
            )
        if self.kind == "url":
            return table.url(self.name, default)
        if self.kind == "boolean":
            return table.boolean(self.name, default)
        if self.kind == "integer":
            low = None if self.minimum is None else int(self.minimum)
            high = None if self.maximum is None else int(self.maximum)
            return table.integer(self.name, default, minimum=low, maximum=high)
        if self.kind == "number":
            return table.number(self.name, default, minimum=self.minimum, maximum=self.maximum)
        if self.kind == "duration":
            return table.duration(self.name, default)
        return table.string_list(self.name, default, choices=self.choices)

    def describe(self) -> dict[str, Any]:
        """For ``viber-exporter plugins --settings``."""
        entry: dict[str, Any] = {"name": self.name, "type": self.kind, "help": self.help}
        entry["required"] = self.required
        if not self.required and self.kind != "secret":
            entry["default"] = self.default
        if self.kind == "secret":
            entry["also"] = f"{self.name}_file"
        if self.choices:
            entry["choices"] = list(self.choices)
        return entry


class Settings(Mapping[str, Any]):
    """Declared settings as read: attribute and key access, read-only, comparable."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values)))

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


def read_settings(spec: Sequence[Setting], table: ConfigTable) -> Settings:
    """Every declared key of ``table``, as a :class:`Settings` object."""
    return Settings({setting.name: setting.read(table) for setting in spec})
