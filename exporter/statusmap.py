"""Provider status → normalised :class:`~viber_exporter.model.Status`, case-insensitive
by construction: keys are folded when the map is built and when it is read, so a
provider writing ``DELIVERED``, ``Delivered`` or ``delivered`` cannot slip through."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .model import Status


class StatusMap(Mapping[str, Status]):
    """``StatusMap({"QUEUED": Status.PENDING, ...})``; :meth:`map` gives
    ``Status.UNKNOWN`` for anything unlisted and never raises."""

    def __init__(self, mapping: Mapping[str, Status] | Iterable[tuple[str, Status]]) -> None:
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        folded: dict[str, Status] = {}
        for raw, status in items:
            if not isinstance(status, Status):
                raise TypeError(f"{raw!r} maps to {status!r}, which is not a Status")
            key = _fold(raw)
            if key in folded and folded[key] is not status:
                raise ValueError(
                    f"{raw!r} maps to {status.value} but another spelling of it to "
                    f"{folded[key].value}: statuses compare case-insensitively"
                )
            folded[key] = status
        self._map = folded

    def map(self, raw: object) -> Status:
        """The normalised status of ``raw``; ``Status.UNKNOWN`` when unlisted or not text."""
        if not isinstance(raw, str):
            return Status.UNKNOWN
        return self._map.get(_fold(raw), Status.UNKNOWN)

    def __getitem__(self, raw: str) -> Status:
        return self._map[_fold(raw)]

    def __contains__(self, raw: object) -> bool:
        return isinstance(raw, str) and _fold(raw) in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"StatusMap({ {k: v.value for k, v in self._map.items()}!r})"


def _fold(raw: str) -> str:
    return raw.strip().casefold()
