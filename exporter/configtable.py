"""Typed, problem-collecting access to one TOML table.

Every getter records a problem (with its full key path) instead of raising, and
returns a harmless placeholder, so one pass over the config reports everything at
once. Plugins use the same class to validate their own keys::

    def parse_settings(cls, table: ConfigTable) -> Settings:
        return Settings(api_key=table.secret("api_key"), base_url=table.url("base_url", default=...))
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from .durations import parse_duration
from .secrets import Secret


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class Problems:
    """The list of ``(key path, message)`` pairs found so far."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        # One problem per key: the first is the most specific (e.g. an unset
        # environment variable, rather than the "is required" that follows from it).
        if path and any(known == path for known, _ in self.items):
            return
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ConfigTable:
    """One table of the config, its key path, and the shared problem list."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        problems: Problems,
        base_dir: Path = Path("."),
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.base_dir = base_dir
        self._used: set[str] = set()

    # -- plumbing -------------------------------------------------------------------
    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self.problems.add(self.key_path(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = MISSING) -> Any:
        """The value as written (after ``${VAR}`` substitution), marking the key used."""
        self._used.add(key)
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            self.problem(key, "is required")
        return default

    def child(self, key: str, *, required: bool = False) -> ConfigTable:
        value = self.raw(key, MISSING if required else {})
        if not isinstance(value, Mapping):
            if value is not MISSING:
                self.problem(key, f"must be a table, got {type(value).__name__}")
            value = {}
        return ConfigTable(value, self.key_path(key), self.problems, self.base_dir)

    def ignore(self, *keys: str) -> None:
        """Mark keys as handled elsewhere, so :meth:`finish` does not call them unknown."""
        self._used.update(keys)

    def finish(self) -> None:
        """Report every key nobody asked for (most often a typo)."""
        known = sorted(self._used - set(self.data)) or sorted(self._used)
        for key in self.data:
            if key not in self._used:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.problem(key, f"is not a known setting{hint}")

    # -- typed getters ----------------------------------------------------------------
    def string(
        self,
        key: str,
        default: str | _Missing = MISSING,
        *,
        choices: Sequence[str] | None = None,
        pattern: str | None = None,
        hint: str = "",
    ) -> str:
        value = self.raw(key, default)
        if value is MISSING:
            return ""
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {_show(value)}")
            return ""
        if default is MISSING and not value.strip():
            self.problem(key, "is empty")  # e.g. ${VAR} with VAR set to ""
            return value
        if choices is not None and value not in choices:
            options = ", ".join(repr(c) for c in choices)
            self.problem(key, f"must be one of {options}, got {_show(value)}")
        if pattern is not None and not re.fullmatch(pattern, value):
            self.problem(key, hint or f"must match {pattern}, got {_show(value)}")
        return value

    def secret(self, key: str, *, required: bool = True) -> Secret | None:
        """A secret given inline (usually as ``${VAR}``) or as ``<key>_file``.

        Whitespace around the value is removed (a variable filled from a file often
        ends in a newline, which an HTTP header refuses); a value with control
        characters inside (a newline, a tab) is a problem. Values never appear in problems; an
        empty value counts as unset.
        """
        file_key = f"{key}_file"
        self._used.update((key, file_key))
        inline, from_file = self.data.get(key), self.data.get(file_key)
        if inline is not None and from_file is not None:
            self.problem(key, f"give either {key} or {file_key}, not both")
            return None
        if from_file is not None:
            return self._read_secret_file(file_key, from_file, required)
        if inline is None or inline == "":
            if required:
                self.problem(key, f"is required (or {file_key})")
            return None
        if not isinstance(inline, str):
            self.problem(key, "must be a string")
            return None
        return self._checked_secret(key, inline.strip(), required)

    def _checked_secret(self, key: str, value: str, required: bool) -> Secret | None:
        if not value:
            if required:
                self.problem(key, "is empty")
            return None
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            # Say what is wrong, never what the value is.
            self.problem(key, "contains a control character (a newline, a tab) inside the value")
            return None
        return Secret(value)

    def _read_secret_file(self, file_key: str, name: object, required: bool) -> Secret | None:
        if not isinstance(name, str) or not name:
            self.problem(file_key, "must be a file path")
            return None
        path = Path(name) if Path(name).is_absolute() else self.base_dir / name
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            self.problem(file_key, f"cannot read {str(path)!r}: {e.strerror or e}")
            return None
        if not value:
            if required:
                self.problem(file_key, f"{str(path)!r} is empty")
            return None
        return self._checked_secret(file_key, value, required)

    def boolean(self, key: str, default: bool | _Missing = MISSING) -> bool:
        value = self.raw(key, default)
        if isinstance(value, bool):
            return value
        if value is not MISSING:
            self.problem(key, f"must be true or false, got {_show(value)}")
        return False

    def integer(
        self,
        key: str,
        default: int | _Missing = MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self.raw(key, default)
        if value is MISSING:
            return minimum or 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"must be a whole number, got {_show(value)}")
            return minimum or 0
        self._check_range(key, value, minimum, maximum)
        return value

    def number(
        self,
        key: str,
        default: float | _Missing = MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> float:
        value = self.raw(key, default)
        if value is MISSING:
            return minimum or 1.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"must be a number, got {_show(value)}")
            return minimum or 1.0
        if positive and value <= 0:
            self.problem(key, f"must be greater than 0, got {value}")
        self._check_range(key, value, minimum, maximum)
        return float(value)

    def _check_range(
        self, key: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            self.problem(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.problem(key, f"must be at most {maximum}, got {value}")

    def duration(
        self, key: str, default: str | float | _Missing = MISSING, *, positive: bool = True
    ) -> float:
        value = self.raw(key, default)
        if value is MISSING:
            return 1.0
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            self.problem(key, str(e))
            return 1.0
        if positive and seconds <= 0:
            self.problem(key, f"must be longer than 0, got {_show(value)}")
        return seconds

    def durations(
        self, key: str, default: Sequence[str | float] | _Missing = MISSING
    ) -> tuple[float, ...]:
        value = self.raw(key, default)
        if value is MISSING:
            return (1.0,)
        if not isinstance(value, list | tuple) or not value:
            self.problem(key, f"must be a non-empty list of durations, got {_show(value)}")
            return (1.0,)
        result: list[float] = []
        for index, item in enumerate(value):
            try:
                seconds = parse_duration(item)
            except ValueError as e:
                self.problems.add(f"{self.key_path(key)}[{index}]", str(e))
                continue
            if seconds <= 0:
                self.problems.add(f"{self.key_path(key)}[{index}]", "must be longer than 0")
            result.append(seconds)
        return tuple(result) or (1.0,)

    def string_list(
        self,
        key: str,
        default: Sequence[str] | _Missing = MISSING,
        *,
        choices: Sequence[str] | None = None,
    ) -> tuple[str, ...]:
        value = self.raw(key, default)
        if value is MISSING:
            return ()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            self.problem(key, f"must be a list of strings, got {_show(value)}")
            return ()
        for index, item in enumerate(value):
            if choices is not None and item not in choices:
                options = ", ".join(repr(c) for c in choices)
                self.problems.add(
                    f"{self.key_path(key)}[{index}]", f"must be one of {options}, got {item!r}"
                )
        return tuple(value)

    def url(self, key: str, default: str | _Missing = MISSING) -> str:
        value = self.string(key, default)
        if value:
            parts = urlsplit(value)
            if "@" in parts.netloc:
                # Credentials in a URL would end up in logs and error messages.
                self.problem(key, "must not contain credentials; use the plugin's secret settings")
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                self.problem(key, f"must be an http:// or https:// URL, got {_show(value)}")
        return value.rstrip("/")
