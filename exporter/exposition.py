"""``/metrics``: the outcome families rendered from a text cache kept per series.

With declared message labels the outcome metrics hold tens of thousands of series (5
labels of 20 values under the default 1,000 combinations: about 50,000 samples), and
prometheus_client formats every sample on every scrape (about 20 µs each: a second
per scrape). The outcome families here keep plain numbers and the text of each series,
re-rendered only when that series changed since the last scrape: a scrape costs a join
of the cached text, and a series that changed costs one formatting of its own lines.

They are still ordinary collectors in the registry (``collect()`` gives the usual
metric families, for ``get_sample_value``, the landing page and any other reader);
:func:`render` asks the registry for everything else, with these collectors silent in
that thread, and appends their cached text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

#: a sample value as prometheus_client writes it (Go's float formatting)
_number: Callable[[float], str] = floatToGoString
_rendering = threading.local()
_EOF = b"# EOF\n"
Key = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labelstr(pairs: Iterable[tuple[str, str]]) -> str:
    """``name="value",…`` sorted by name, as prometheus_client writes them (so a line
    reads the same whichever renders it)."""
    return ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(pairs))


class _One:
    """A registry-like holder of one metric family, for prometheus_client's encoders."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return [self.family]


class CachedFamily(Collector):
    """A metric family whose series keep their rendered text until they change."""

    kind = ""
    #: the formats whose text differs (only a histogram's: OpenMetrics adds exemplars)
    formats: tuple[bool, ...] = (False,)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._lock = threading.Lock()
        #: per format (OpenMetrics or not): each series' text, the series changed since
        #: it was rendered, and the whole family's text (None: to be joined again)
        self._text: dict[bool, dict[Key, str]] = {False: {}, True: {}}
        self._dirty: dict[bool, set[Key]] = {False: set(), True: set()}
        self._joined: dict[bool, str | None] = {False: None, True: None}
        self._headers: dict[str, str] = {}
        if registry is not None:
            registry.register(self)

    def _key(self, values: Sequence[str]) -> Key:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
        return tuple(str(value) for value in values)

    def _changed(self, key: Key) -> None:
        """Called with the lock held after the series ``key`` was created or changed."""
        for openmetrics in self.formats:
            self._dirty[openmetrics].add(key)
            self._joined[openmetrics] = None

    def _removed(self, key: Key) -> None:
        for openmetrics in self.formats:
            self._text[openmetrics].pop(key, None)
            self._dirty[openmetrics].discard(key)
            self._joined[openmetrics] = None

    # the subclass's own data ----------------------------------------------------------
    def _keys(self) -> list[Key]:
        raise NotImplementedError

    def _series_text(self, key: Key, openmetrics: bool) -> str:
        raise NotImplementedError

    def _family(self, with_samples: bool) -> Metric:
        raise NotImplementedError

    # Collector --------------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return [self._family(False)]

    def collect(self) -> Iterable[Metric]:
        if getattr(_rendering, "active", False):
            return []  # render() appends this family's cached text itself
        return [self._family(True)]

    # rendering --------------------------------------------------------------------------
    def render(self, encoder: Any, content_type: str) -> str:
        """This family's text in the format of ``encoder`` (from ``choose_encoder``)."""
        openmetrics = (
            content_type.startswith("application/openmetrics-text") and True in self.formats
        )
        header = self._headers.get(content_type)
        if header is None:
            # the HELP and TYPE lines exactly as prometheus_client writes them
            header = encoder(_One(self._family(False))).decode()
            header = header.removesuffix(_EOF.decode())
            self._headers[content_type] = header
        with self._lock:
            joined = self._joined[openmetrics]
            if joined is None:
                texts = self._text[openmetrics]
                for key in self._dirty[openmetrics]:
                    texts[key] = self._series_text(key, openmetrics)
                self._dirty[openmetrics].clear()
                joined = self._joined[openmetrics] = "".join(texts.values())
        return header + joined


class _Scalar(CachedFamily):
    """A family whose series each hold one number (in units of ``1 / scale``)."""

    suffix = ""
    scale = 1

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._values: dict[Key, int | float] = {}
        self._prefix: dict[Key, str] = {}

    def _set(self, key: Key, value: float) -> None:
        """With the lock held: the series ``key`` now holds ``value``."""
        if key not in self._prefix:
            labelstr = _labelstr(zip(self.labelnames, key, strict=True))
            sample = self.name + self.suffix
            self._prefix[key] = f"{sample}{{{labelstr}}} " if labelstr else f"{sample} "
        self._values[key] = value
        self._changed(key)

    def items(self) -> list[tuple[Key, float]]:
        """Every series and its value, now."""
        with self._lock:
            return [(key, value / self.scale) for key, value in self._values.items()]

    def _series_text(self, key: Key, openmetrics: bool) -> str:
        return f"{self._prefix[key]}{_number(self._values[key] / self.scale)}\n"

    def _family(self, with_samples: bool) -> Metric:
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=list(self.labelnames))
        if with_samples:
            with self._lock:
                values = list(self._values.items())
            for key, value in values:
                family.add_metric(list(key), value / self.scale)
        return family


class CachedCounter(_Scalar):
    """A counter; ``scale`` > 1 keeps it in integers (money in millionths: a sum of prices
    reads as the prices do, 0.012 + 0.02 is 0.032, however many are added)."""

    kind = "counter"
    suffix = "_total"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
        scale: int = 1,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self.scale = scale

    def labels(self, *values: str) -> _CounterChild:
        key = self._key(values)
        with self._lock:
            if key not in self._values:
                self._set(key, 0)
        return _CounterChild(self, key)

    def inc(self, key: Key, amount: float) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        step = round(amount * self.scale) if self.scale != 1 else amount
        with self._lock:
            self._set(key, self._values.get(key, 0) + step)


class _CounterChild:
    __slots__ = ("family", "key")

    def __init__(self, family: CachedCounter, key: Key) -> None:
        self.family, self.key = family, key

    def inc(self, amount: float = 1.0) -> None:
        self.family.inc(self.key, amount)


class CachedGauge(_Scalar):
    """A gauge whose whole set of series is given at once (``replace``)."""

    kind = "gauge"

    def replace(self, values: Mapping[Key, float]) -> None:
        """The series are now exactly ``values``: only those that differ are re-rendered."""
        with self._lock:
            for key in [key for key in self._values if key not in values]:
                del self._values[key], self._prefix[key]
                self._removed(key)
            for key, value in values.items():
                if key not in self._values or self._values[key] != value:
                    self._set(self._key(key), float(value))


class _Series:
    """One histogram series: counts per bucket (not cumulative), the sum, and the latest
    exemplar of each bucket."""

    __slots__ = ("counts", "exemplars", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.exemplars: list[Exemplar | None] = [None] * buckets


class CachedHistogram(CachedFamily):
    """A histogram with exemplars (shown in OpenMetrics only, as prometheus_client does)."""

    kind = "histogram"
    formats = (False, True)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._le = tuple(_number(b) for b in bounds)
        self._series: dict[Key, _Series] = {}
        #: each series' labels, and its bucket lines' labels before and after ``le``
        self._labelstr: dict[Key, tuple[str, str, str]] = {}

    def _labels(self, key: Key) -> tuple[str, str, str]:
        pairs = list(zip(self.labelnames, key, strict=True))
        head = _labelstr(p for p in pairs if p[0] < "le")
        tail = _labelstr(p for p in pairs if p[0] > "le")
        return _labelstr(pairs), head + "," if head else "", "," + tail if tail else ""

    def labels(self, *values: str) -> _HistogramChild:
        key = self._key(values)
        with self._lock:
            if key not in self._series:
                self._series[key] = _Series(len(self.bounds))
                self._labelstr[key] = self._labels(key)
                self._changed(key)
        return _HistogramChild(self, key)

    def observe(self, key: Key, value: float, exemplar: Mapping[str, str] | None = None) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), -1)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(self.bounds))
                self._labelstr[key] = self._labels(key)
            series.counts[index] += 1
            series.total += value
            if exemplar is not None:
                series.exemplars[index] = Exemplar(dict(exemplar), value, time.time())
            self._changed(key)

    def items(self) -> list[tuple[Key, list[int], float]]:
        """Every series now: its counts per bucket (of ``bounds``, not cumulative) and sum."""
        with self._lock:
            return [(key, list(s.counts), s.total) for key, s in self._series.items()]

    def _series_text(self, key: Key, openmetrics: bool) -> str:
        series, (labelstr, head, tail) = self._series[key], self._labelstr[key]
        lines = []
        cumulative = 0
        for le, count, exemplar in zip(self._le, series.counts, series.exemplars, strict=True):
            cumulative += count
            line = f'{self.name}_bucket{{{head}le="{le}"{tail}}} {_number(cumulative)}'
            if openmetrics and exemplar is not None:
                shown = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(exemplar.labels.items()))
                line += f" # {{{shown}}} {_number(exemplar.value)} {exemplar.timestamp}"
            lines.append(line)
        braces = f"{{{labelstr}}}" if labelstr else ""
        lines.append(f"{self.name}_count{braces} {_number(cumulative)}")
        lines.append(f"{self.name}_sum{braces} {_number(series.total)}")
        return "\n".join(lines) + "\n"

    def _family(self, with_samples: bool) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        if with_samples:
            with self._lock:
                snapshot = [
                    (key, list(s.counts), s.total, list(s.exemplars))
                    for key, s in self._series.items()
                ]
            for key, counts, total, exemplars in snapshot:
                buckets: list[Any] = []
                cumulative = 0
                for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
                    cumulative += count
                    buckets.append((le, cumulative, exemplar) if exemplar else (le, cumulative))
                family.add_metric(list(key), buckets, total)
        return family


class _HistogramChild:
    __slots__ = ("family", "key")

    def __init__(self, family: CachedHistogram, key: Key) -> None:
        self.family, self.key = family, key

    def observe(self, value: float, exemplar: Mapping[str, str] | None = None) -> None:
        self.family.observe(self.key, value, exemplar)


def render(
    registry: CollectorRegistry, cached: Sequence[CachedFamily], accept: str
) -> tuple[bytes, str]:
    """The body and content type of a scrape of ``registry`` asking for ``accept``: the
    ``cached`` families (registered in it) from their text cache, after the rest."""
    encoder, content_type = choose_encoder(accept)
    _rendering.active = True
    try:
        body = encoder(registry)
    finally:
        _rendering.active = False
    tail = "".join(family.render(encoder, content_type) for family in cached).encode()
    if body.endswith(_EOF):
        return body[: -len(_EOF)] + tail + _EOF, content_type
    return body + tail, content_type
