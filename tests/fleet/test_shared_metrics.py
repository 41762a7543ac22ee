"""The shared tier's figures: hits, misses, waits and wait timeouts, read through the
OpenTelemetry SDK's in-memory reader and from Broker.stats()."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import rsauth
from rsauth.sandbox import Sandbox
from tests._idle import wait_for
from tests._otel import read, reader
from tests.fleet.conftest import FLEET_KEY, RedisServer, lease_keys

SHARED = {"tier": "shared"}


def shared(server: RedisServer, **kwargs: Any) -> rsauth.RedisCache:
    return rsauth.RedisCache(server.url, fleet_key=FLEET_KEY, **kwargs)


@pytest.fixture
def provider() -> None:
    reader()


def test_one_fetch_then_hits_from_the_store(
    sandbox: Sandbox, redis_server: RedisServer, provider: None
) -> None:
    before = read()
    brokers = [rsauth.Broker(shared_cache=shared(redis_server)) for _ in range(3)]
    try:
        for broker in brokers:
            broker.connect(workgroup=sandbox.workgroup).close()
        stats = [broker.stats() for broker in brokers]
    finally:
        for broker in brokers:
            broker.close()
    during = read() - before
    assert during.of("rsauth.cache.misses", **SHARED) == 1
    assert during.of("rsauth.cache.hits", **SHARED) == 2
    assert during.of("rsauth.cache.misses", tier="process") == 3, "each worker's own cache"
    assert during.of("rsauth.login.fetches", method="iam") == 1
    assert [s["cache.shared.misses"] for s in stats] == [1, 0, 0]
    assert [s["cache.shared.hits"] for s in stats] == [0, 1, 1]
    assert all(s["cache.shared.waits"] == 0 for s in stats)


@pytest.fixture
def holder(sandbox: Sandbox, redis_server: RedisServer) -> Iterator[threading.Thread]:
    """A worker whose GetCredentials hangs for 3 s while it holds the store's lease."""
    sandbox.latency(3.0, operation="GetCredentials", count=1)
    with rsauth.Broker(shared_cache=shared(redis_server)) as broker:
        thread = threading.Thread(
            target=broker.credentials, kwargs={"workgroup": sandbox.workgroup}
        )
        thread.start()
        wait_for(lambda: bool(lease_keys(redis_server)), "the lease taken")
        yield thread
        thread.join(60)


def test_a_wait_for_the_lease_holder(
    sandbox: Sandbox, redis_server: RedisServer, provider: None, holder: threading.Thread
) -> None:
    before = read()
    with rsauth.Broker(shared_cache=shared(redis_server, wait_seconds=60.0)) as waiter:
        waiter.credentials(workgroup=sandbox.workgroup)
        stats = waiter.stats()
    during = read() - before
    assert stats["cache.shared.waits"] == 1
    assert stats["cache.shared.wait_timeouts"] == 0
    assert stats["cache.shared.hits"] == 1, "the holder's login, from the store"
    assert during.of("rsauth.cache.waits", **SHARED) == 1
    assert during.of("rsauth.cache.wait_timeouts", **SHARED) == 0


def test_a_wait_that_runs_out(
    sandbox: Sandbox, redis_server: RedisServer, provider: None, holder: threading.Thread
) -> None:
    before = read()
    with rsauth.Broker(shared_cache=shared(redis_server, wait_seconds=0.0)) as impatient:
        impatient.credentials(workgroup=sandbox.workgroup)
        stats = impatient.stats()
    during = read() - before
    assert stats["cache.shared.waits"] == stats["cache.shared.wait_timeouts"] == 1
    assert stats["cache.shared.misses"] == 1, "fetched itself"
    assert stats["redshift-serverless.GetCredentials"] == 1
    assert during.of("rsauth.cache.wait_timeouts", **SHARED) == 1
