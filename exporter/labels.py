"""Message labels: bounded dimensions a deployment declares (``[metrics.labels.NAME]``)
and registrations carry (``"labels": {"kind": "otp"}``), on every outcome metric.

The bound is applied once, when a message is registered: its labels are stored already
bounded, so each message counts under the same labels for its whole life, across
restarts and replicas. A label keeps its allow-list (``values``) or its first
``max_values`` distinct values, in the order first seen; any other value becomes
``other``. The kept values, and the kept combinations of all the labels (at most
``metrics.max_label_combinations``, the rest ``other`` in every label), are stored in
the state store, so the same value keeps the same name after a restart and on every
replica: the store decides inside the registration's transaction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: ``keep(name, value, limit)``: store ``value`` among the kept values of ``name`` if
#: there is room (fewer than ``limit`` kept) or it is kept already; True when it is.
KeepFunction = Callable[[str, str, int], bool]

OTHER = "other"
#: labels the exporter's own metrics use: a declared label may not take their names
RESERVED = frozenset(
    {
        "provider",
        "status",
        "reason",
        "side",
        "currency",
        "channel",
        "country",
        "outcome",
        "le",
        "instance",
        "job",
    }
)
NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_DECLARED = 5
DEFAULT_MAX_VALUES = 20
MAX_MAX_VALUES = 1000
MAX_VALUE_LENGTH = 64
DEFAULT_MAX_COMBINATIONS = 1000
#: check-config refuses a configuration whose labelled outcome metrics could exceed
#: this many series per provider instance
SERIES_CEILING = 1_000_000
#: the kept combinations are stored under this name (no label can have it)
COMBINATIONS = "*"


@dataclass(frozen=True)
class DeclaredLabel:
    name: str
    #: the allow-list (None: the first ``max_values`` distinct values)
    values: tuple[str, ...] | None = None
    max_values: int = DEFAULT_MAX_VALUES

    @property
    def limit(self) -> int:
        """Values kept under their own name."""
        return len(self.values) if self.values is not None else self.max_values

    @property
    def exported(self) -> int:
        """Distinct values exported at most: the kept ones, ``other`` and ``""``."""
        return self.limit + 2


@dataclass(frozen=True)
class LabelSettings:
    declared: tuple[DeclaredLabel, ...] = ()
    max_combinations: int = DEFAULT_MAX_COMBINATIONS

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.declared)

    def combinations(self) -> int:
        """Distinct combinations exported at most (``other`` everywhere included)."""
        product = math.prod(label.exported for label in self.declared)
        return min(product, self.max_combinations + 1) if self.declared else 1


def outcome_series(
    settings: LabelSettings, buckets: int, country: bool, currencies: int = 1
) -> int:
    """Worst-case series of the labelled outcome metrics for one provider instance: each
    family's own label values, times every combination of the declared labels. Reasons
    are bounded at 51 per instance, countries at 301, fallback channels assumed one."""
    countries = 301 if country else 1
    per_combination = (
        6 * countries  # viber_message_status_transitions_total: statuses
        + 51 * countries  # viber_message_failures_total: reasons
        + 2  # viber_message_failures_by_side_total: sides
        + 2 * (buckets + 3)  # two latency histograms: buckets, +Inf, _sum, _count
        + 2 * currencies * countries  # viber_message_cost_total: channels × currencies
        + 1  # viber_message_sms_fallbacks_total
        + 6  # viber_message_fallback_outcomes_total: outcomes
        + 1  # viber_message_watch_expired_total
        + 6  # viber_messages: statuses
    )
    return per_combination * settings.combinations()


def problem(settings: LabelSettings, labels: object) -> str | None:
    """Why a registration's ``labels`` cannot be taken, or None."""
    if labels is None:
        return None
    if not isinstance(labels, Mapping):
        return "labels must be an object of label name to string value"
    declared = set(settings.names)
    unknown = sorted(str(name) for name in labels if name not in declared)
    if unknown:
        known = ", ".join(settings.names) or "none are declared"
        return f"undeclared label(s): {', '.join(unknown)} (declared in [metrics.labels]: {known})"
    for name, value in labels.items():
        if not isinstance(value, str):
            return f"label {name} must be a string"
        if len(value) > MAX_VALUE_LENGTH:
            return f"label {name} is longer than {MAX_VALUE_LENGTH} characters"
    return None


def complete(settings: LabelSettings, labels: Mapping[str, str] | None) -> dict[str, str]:
    """Every declared label, in declaration order: a missing one is ``""``."""
    given = labels or {}
    return {name: given.get(name, "") for name in settings.names}


def encode(labels: Mapping[str, str]) -> str | None:
    """The stored form: a JSON object, or None for no labels (or all of them empty)."""
    if not any(labels.values()):
        return None
    return json.dumps(dict(labels), separators=(",", ":"), ensure_ascii=False)


def decode(stored: str | None, names: Sequence[str]) -> tuple[str, ...]:
    """The label values of a stored message, in ``names``' order (``""`` when absent)."""
    if not stored or not names:
        return ("",) * len(names)
    data: dict[str, Any] = json.loads(stored)
    return tuple(str(data.get(name, "")) for name in names)


class Bounds:
    """The kept values of each declared label and the kept combinations, as the store
    holds them. ``bound`` maps a registration's labels to the stored ones; it asks
    ``keep`` (the store, inside the registration's transaction) whenever a value is not
    known to be kept yet, so every process decides the same way; what ``keep`` added is
    collected in ``pending`` and known here only once the store has committed it
    (``commit``)."""

    def __init__(self, settings: LabelSettings, kept: Mapping[str, Sequence[str]]) -> None:
        self.settings = settings
        self._kept: dict[str, set[str]] = {name: set(values) for name, values in kept.items()}

    def _known(self, name: str, value: str, pending: Mapping[str, set[str]]) -> bool:
        return value in self._kept.get(name, ()) or value in pending.get(name, ())

    def bound(
        self, labels: Mapping[str, str], keep: KeepFunction, pending: Mapping[str, set[str]]
    ) -> dict[str, str]:
        result: dict[str, str] = {}
        for label in self.settings.declared:
            value = labels.get(label.name, "")
            if value == "" or self._known(label.name, value, pending):
                result[label.name] = value
            elif label.values is not None:
                result[label.name] = value if value in label.values else OTHER
            else:
                result[label.name] = value if keep(label.name, value, label.max_values) else OTHER
        combination = encode(result)
        if (
            combination is None
            or self._known(COMBINATIONS, combination, pending)
            or keep(COMBINATIONS, combination, self.settings.max_combinations)
        ):
            return result
        return dict.fromkeys(result, OTHER)

    def commit(self, added: Mapping[str, set[str]]) -> None:
        for name, values in added.items():
            self._kept.setdefault(name, set()).update(values)
