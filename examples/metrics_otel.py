"""rsauth's figures through OpenTelemetry: a meter provider, two connects, the counters.

The application owns the SDK and the exporter; rsauth depends on the API only
(``pip install 'rsauth[otel]' opentelemetry-sdk``). This example reads the figures
back with the SDK's in-memory reader; in production the reader is an exporter's
(docs/metrics.md: Prometheus or OTLP). Run it with
``.venv/bin/python examples/metrics_otel.py``; it starts its own sandbox.
"""

from __future__ import annotations

import os

import rsauth
from rsauth.sandbox import Sandbox


def main() -> None:
    # --8<-- [start:provider]
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    # The exporter's reader in production: PrometheusMetricReader() or
    # PeriodicExportingMetricReader(OTLPMetricExporter()).
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    # --8<-- [end:provider]

    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)  # endpoints, region, keys and the sandbox CA
        for _ in range(2):  # the second connect is a cache hit
            with rsauth.connect(workgroup=sandbox.workgroup) as connection:
                connection.cursor().execute("select 1")
        collected = reader.get_metrics_data()
    assert collected is not None
    for resource in collected.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in {"rsauth.login.fetches", "rsauth.cache.hits"}:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        value = getattr(point, "value", None)
                        print(f"{metric.name} {sorted(attributes.items())} = {value}")


if __name__ == "__main__":
    main()
