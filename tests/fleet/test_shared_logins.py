"""Two Brokers sharing logins through a real Redis, AWS stubbed (botocore Stubber) and the
driver faked as in tests/unit: the broker's side of fleet mode, fast enough for the
mutation check's test selection (``make mutate``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redshift_connector

from rsauth import Broker, RedisCache
from tests.unit.conftest import FakeClock
from tests.unit.test_broker import (  # noqa: F401 (_lookups_in_line: an autouse fixture)
    REGION,
    Aws,
    FakeDriver,
    _lookups_in_line,
    keyed_session,
)

from .conftest import FLEET_KEY, RedisServer


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> FakeDriver:
    fake = FakeDriver()
    monkeypatch.setattr(redshift_connector, "connect", fake)
    return fake


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[list[tuple[Broker, Aws]]]:
    """Two Brokers (as in two worker processes) on one store, one clock; each its own AWS."""
    clock = FakeClock()
    made: list[tuple[Broker, Aws]] = []
    for _ in range(2):
        sleeps: list[Any] = []
        broker = Broker(
            session=keyed_session(),
            region=REGION,
            clock=clock,
            environ={},
            sleep=sleeps.append,
            # No jitter: each worker's refresh starts at the same instant of the clock.
            shared_cache=RedisCache(redis_server.url, fleet_key=FLEET_KEY, jitter=0.0),
        )
        aws = Aws(broker, clock)
        if not made:  # one worker per access key asks STS who it is; the other reads it
            aws.caller()
        made.append((broker, aws))
    yield made
    for broker, _ in made:
        broker.close()


def both_due_for_a_refresh(workers: list[tuple[Broker, Aws]]) -> None:
    """Both workers hold pw-1, the first worker's AWS has pw-2 ready, and the clock stands
    in the advisory window of the 900 s login."""
    (first, first_aws), (second, second_aws) = workers
    first_aws.credentials("pw-1")
    first_aws.workgroup()
    second_aws.workgroup()
    first.credentials(workgroup="analytics")
    second.credentials(workgroup="analytics")
    clock = first._clock
    assert isinstance(clock, FakeClock)
    clock.advance(650)
    first_aws.credentials("pw-2")


def test_a_login_one_worker_fetched_serves_the_other_without_aws(
    workers: list[tuple[Broker, Aws]], driver: FakeDriver
) -> None:
    (first, first_aws), (second, second_aws) = workers
    first_aws.credentials("pw-1")
    first_aws.workgroup()
    second_aws.workgroup()
    assert first.credentials(workgroup="analytics").password == "pw-1"
    assert second.credentials(workgroup="analytics").password == "pw-1"
    first_aws.done()
    second_aws.done()
    assert "redshift-serverless.GetCredentials" not in second.stats()


def test_a_login_the_database_refused_is_never_shared_again(
    workers: list[tuple[Broker, Aws]], driver: FakeDriver
) -> None:
    (first, first_aws), (second, second_aws) = workers
    first_aws.credentials("pw-1")
    first_aws.workgroup()
    first_aws.credentials("pw-2")
    second_aws.workgroup()
    driver.refuse = {"pw-1"}
    first.connect(workgroup="analytics")
    # The refused login left the store; the fresh one took its place.
    second.connect(workgroup="analytics")
    first_aws.done()
    second_aws.done()
    assert [call["password"] for call in driver.calls] == ["pw-1", "pw-2", "pw-2"]


def test_a_refresh_ahead_replaces_the_shared_login_once_for_the_fleet(
    workers: list[tuple[Broker, Aws]], driver: FakeDriver
) -> None:
    (first, first_aws), (second, second_aws) = workers
    both_due_for_a_refresh(workers)
    # The worker refreshing does not take back the login it holds: it fetches anew...
    assert first.credentials(workgroup="analytics").password == "pw-2"
    # ...and the other worker takes that one from the store.
    assert second.credentials(workgroup="analytics").password == "pw-2"
    first_aws.done()
    second_aws.done()
    assert "redshift-serverless.GetCredentials" not in second.stats()


def test_a_secret_one_worker_read_serves_the_other_without_aws(
    workers: list[tuple[Broker, Aws]], driver: FakeDriver
) -> None:
    (first, first_aws), (second, second_aws) = workers
    first_aws.workgroup()
    first_aws.secret("pw-app", "a", secret="app-login")
    second_aws.workgroup()
    assert first.credentials(workgroup="analytics", secret_id="app-login").password == "pw-app"
    assert second.credentials(workgroup="analytics", secret_id="app-login").password == "pw-app"
    first_aws.done()
    second_aws.done()
    assert first.stats()["secretsmanager.GetSecretValue"] == 1
    assert "secretsmanager.GetSecretValue" not in second.stats()


def test_a_worker_that_looked_just_before_another_published_takes_that_login(
    workers: list[tuple[Broker, Aws]], driver: FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race a busy fleet runs every refresh: a worker finds the store's login no newer
    # than its own, and before it takes the lease another worker fetches, publishes and
    # releases. The lease is free, but the store has the fresh login: no second fetch.
    (first, first_aws), (second, second_aws) = workers
    both_due_for_a_refresh(workers)
    assert second._shared is not None
    store = second._shared._store
    acquire = store.acquire

    def another_worker_first(*args: Any) -> bool:
        monkeypatch.setattr(store, "acquire", acquire)
        assert first.credentials(workgroup="analytics").password == "pw-2"
        return bool(acquire(*args))

    monkeypatch.setattr(store, "acquire", another_worker_first)
    assert second.credentials(workgroup="analytics").password == "pw-2"
    first_aws.done()
    second_aws.done()
    assert "redshift-serverless.GetCredentials" not in second.stats()
