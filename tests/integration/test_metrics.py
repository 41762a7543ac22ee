"""rsauth's metrics read back with the OpenTelemetry SDK's in-memory reader, and the same
figures from Broker.stats(), while logins, refreshes, recoveries and errors happen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from tests._otel import assert_names_nothing_of, read, reader
from tests.conftest import secrets_of

import rsauth
from rsauth.sandbox import Sandbox


class MovableClock:
    """The real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


@pytest.fixture
def where(sandbox: Sandbox) -> dict[str, str]:
    """The attributes every login of these tests carries."""
    reader()  # the provider is set after `import rsauth`, as an application would
    return {"workgroup": sandbox.workgroup, "region": sandbox.region}


@pytest.fixture
def forbidden(sandbox: Sandbox) -> Iterator[list[str]]:
    """What no attribute may hold: users, the caller's ARN and key, every secret."""
    identity = boto3.client("sts").get_caller_identity()
    words = ["sandbox-admin", "IAM:", "admin", identity["Arn"], sandbox.env["AWS_ACCESS_KEY_ID"]]
    yield words
    assert_names_nothing_of(read(), [*words, *secrets_of(sandbox)])


def test_connects_are_counted_by_method(
    sandbox: Sandbox, where: dict[str, str], forbidden: list[str]
) -> None:
    before = read()
    with rsauth.Broker() as broker:
        for _ in range(3):
            broker.connect(workgroup=sandbox.workgroup).close()
        for _ in range(2):
            broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        during = read() - before
        stats = broker.stats()

    iam, secret = {"method": "iam", **where}, {"method": "secret", **where}
    assert during.of("rsauth.login.fetches", operation="GetCredentials", **iam) == 1
    assert during.of("rsauth.login.fetches", operation="GetSecretValue", **secret) == 1
    assert during.of("rsauth.login.fetches") == stats["login.fetches"] == 2
    assert stats["login.fetches.iam"] == stats["login.fetches.secret"] == 1
    assert during.of("rsauth.cache.misses", tier="process") == stats["cache.misses"] == 2
    assert during.of("rsauth.cache.hits", tier="process") == stats["cache.hits"] == 3
    assert during.of("rsauth.logins.cached", **iam) == 1
    assert during.of("rsauth.logins.cached", **secret) == 1
    assert stats["cache.logins"] == 2
    for phase in ("login", "driver"):
        assert during.histogram_count("rsauth.connect.duration", phase=phase, **iam) == 3
        assert during.histogram_count("rsauth.connect.duration", phase=phase, **secret) == 2
    assert stats["connect.count"] == 5
    assert stats["connect.driver_us"] > 0
    # Every AWS call is counted once, as the sandbox saw it.
    calls = sandbox.calls()
    assert during.of("rsauth.aws.calls", service="redshift-serverless",
                     operation="GetCredentials") == calls["redshift-serverless.GetCredentials"]
    assert stats["redshift-serverless.GetCredentials"] == 1
    assert during.of("rsauth.aws.errors") == stats["aws.errors"] == 0
    # Closed: nothing cached any more, and the counters keep what was counted.
    after = read() - before
    assert after.of("rsauth.logins.cached") == 0
    assert after.of("rsauth.login.fetches") == 2


def test_a_refresh_ahead_of_expiry(
    sandbox: Sandbox, where: dict[str, str], forbidden: list[str]
) -> None:
    clock = MovableClock()
    before = read()
    with rsauth.Broker(clock=clock) as broker:
        broker.connect(workgroup=sandbox.workgroup, duration=900).close()
        # 650 s into a 900 s login: past L/3 before expiry, not yet in the mandatory window.
        clock.offset = timedelta(seconds=650)
        broker.connect(workgroup=sandbox.workgroup, duration=900).close()
        broker.connect(workgroup=sandbox.workgroup, duration=900).close()
        stats = broker.stats()
    during = read() - before
    assert during.of("rsauth.cache.refreshes", tier="process") == stats["cache.refreshes"] == 1
    assert during.of("rsauth.login.fetches", method="iam", **where) == 2
    assert during.of("rsauth.cache.misses", tier="process") == 1
    assert during.of("rsauth.cache.hits", tier="process") == 1


def test_a_refused_login_recovered(
    sandbox: Sandbox, where: dict[str, str], forbidden: list[str]
) -> None:
    before = read()
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup).close()
        sandbox.expire_passwords()
        broker.connect(workgroup=sandbox.workgroup).close()
        stats = broker.stats()
    during = read() - before
    assert during.of("rsauth.login.recoveries", method="iam", **where) == 1
    assert stats["login.recoveries"] == 1
    assert during.of("rsauth.login.retries") == stats["login.retries"] == 1
    assert during.of("rsauth.login.fetches", method="iam", **where) == 2


def test_a_secret_recovered_in_a_rotation(
    sandbox: Sandbox, where: dict[str, str], forbidden: list[str]
) -> None:
    before = read()
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        sandbox.begin_rotation()
        try:
            broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        finally:
            sandbox.finish_rotation()
        stats = broker.stats()
    during = read() - before
    assert during.of("rsauth.login.recoveries", method="secret", **where) == 1
    # The first read, AWSCURRENT read again (unchanged), then AWSPENDING.
    assert during.of("rsauth.login.fetches", operation="GetSecretValue", **where) == 3
    assert stats["login.fetches.secret"] == 3


def test_aws_errors_by_code(sandbox: Sandbox, where: dict[str, str], forbidden: list[str]) -> None:
    sandbox.deny("IAM:sandbox-admin")
    before = read()
    with rsauth.Broker() as broker:
        with pytest.raises(rsauth.AccessDeniedError):
            broker.connect(workgroup=sandbox.workgroup)
        stats = broker.stats()
    during = read() - before
    assert during.of(
        "rsauth.aws.errors", service="redshift-serverless", operation="GetCredentials",
        code="AccessDeniedException", region=sandbox.region,
    ) == 1
    assert stats["aws.errors"] == stats["aws.errors.AccessDeniedException"] == 1
    assert during.of("rsauth.login.fetches") == 0


def test_an_error_after_botocores_retries_is_counted_once(
    sandbox: Sandbox, where: dict[str, str], forbidden: list[str]
) -> None:
    sandbox.throttle(50, operation="GetCredentials")
    before = read()
    with rsauth.Broker() as broker:
        with pytest.raises(rsauth.ServiceError):
            broker.credentials(workgroup=sandbox.workgroup)
        stats = broker.stats()
    during = read() - before
    assert during.of("rsauth.aws.errors", code="ThrottlingException") == 1
    assert stats["aws.errors.ThrottlingException"] == 1
    assert stats["redshift-serverless.GetCredentials"] == 1


# A provider set after the first Broker made its instruments, in a process of its own
# (the global provider can be set only once).
_LATE_PROVIDER = """
import json, sys
import rsauth
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported early"
broker = rsauth.Broker()
assert "opentelemetry" not in sys.modules, "imported by rsauth"
workgroup = sys.argv[1]
broker.connect(workgroup=workgroup).close()

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
broker.connect(workgroup=workgroup).close()

found = {}
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                value = point.count if hasattr(point, "bucket_counts") else point.value
                found[metric.name] = found.get(metric.name, 0) + value
print(json.dumps(found))
"""


def test_a_provider_set_after_the_first_broker_is_picked_up(sandbox: Sandbox) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LATE_PROVIDER, sandbox.workgroup],
        env={**os.environ, **sandbox.env}, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    # Counted before the provider was set, reported by the counters after.
    assert found["rsauth.login.fetches"] == 1
    assert found["rsauth.cache.hits"] == 1
    assert found["rsauth.logins.cached"] == 1
    # The histogram records from the moment the provider is there: one connect, two phases.
    assert found["rsauth.connect.duration"] == 2


def test_every_instrument_is_there(sandbox: Sandbox, where: dict[str, str]) -> None:
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup).close()
        names = read().names
    assert {
        "rsauth.login.fetches", "rsauth.cache.hits", "rsauth.cache.misses",
        "rsauth.logins.cached", "rsauth.connect.duration", "rsauth.aws.calls",
    } <= names
