"""Reading rsauth's OpenTelemetry metrics in tests: the SDK's in-memory reader.

OpenTelemetry allows one global meter provider per process, so the first test that asks
sets it and every later one reads the same. rsauth's counters are the process's totals:
a test reads them before and after what it does and compares the difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

# One point of one instrument: its name and its attributes, sorted.
Point = tuple[str, tuple[tuple[str, str], ...]]

_reader: InMemoryMetricReader | None = None


def reader() -> InMemoryMetricReader:
    """The in-memory reader of the process's global meter provider, set on first use."""
    global _reader
    if _reader is None:
        _reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))
    return _reader


@dataclass
class Reading:
    """rsauth's metrics at one collection: sums and gauges by point, histograms' counts."""

    values: Counter[Point] = field(default_factory=Counter)
    counts: Counter[Point] = field(default_factory=Counter)
    attribute_values: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    def __sub__(self, before: Reading) -> Reading:
        return Reading(
            values=_minus(self.values, before.values),
            counts=_minus(self.counts, before.counts),
            attribute_values=self.attribute_values,
            names=self.names,
        )

    def of(self, name: str, **attrs: str) -> int:
        """The sum over the points of ``name`` whose attributes include ``attrs``."""
        return sum(
            value for (point, given), value in self.values.items()
            if point == name and attrs.items() <= dict(given).items()
        )

    def histogram_count(self, name: str, **attrs: str) -> int:
        return sum(
            value for (point, given), value in self.counts.items()
            if point == name and attrs.items() <= dict(given).items()
        )


def _minus(after: Counter[Point], before: Counter[Point]) -> Counter[Point]:
    return Counter({point: after[point] - before[point] for point in after.keys() | before})


def read() -> Reading:
    """Collects now (cumulative temporality, the in-memory reader's default)."""
    data = reader().get_metrics_data()
    found = Reading()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != "rsauth":
                continue
            for metric in scope.metrics:
                found.names.add(metric.name)
                for point in metric.data.data_points:
                    attrs = tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items()))
                    found.attribute_values.update(value for _, value in attrs)
                    key = (metric.name, attrs)
                    if isinstance(point, HistogramDataPoint):
                        found.counts[key] += point.count
                    elif isinstance(point, NumberDataPoint):
                        found.values[key] += int(point.value)
    return found


def assert_names_nothing_of(reading: Reading, forbidden: Iterable[str]) -> None:
    """No attribute value holds any of ``forbidden`` (users, people's ARNs, secrets)."""
    for value in reading.attribute_values:
        leaked = [word for word in forbidden if word and word in value]
        assert not leaked, f"an attribute value names {leaked}: {value!r}"
