"""How long the broker keeps what it looked up: the endpoint and the admin secret.

The broker's clock is injected and moved; the sandbox counts the AWS calls, so
each lifetime is seen from both sides of its boundary.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import rsauth
from rsauth.sandbox import Sandbox


class MovableClock:
    """The real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


def calls(sandbox: Sandbox, operation: str) -> int:
    return sandbox.calls().get(operation, 0)


def test_the_endpoint_is_looked_up_again_after_its_lifetime(sandbox: Sandbox) -> None:
    clock = MovableClock()
    with rsauth.Broker(clock=clock, endpoint_ttl=3600) as broker:
        broker.connect(workgroup=sandbox.workgroup).close()
        assert calls(sandbox, "redshift-serverless.GetWorkgroup") == 1

        clock.offset = timedelta(seconds=3500)  # inside the lifetime: kept
        broker.connect(workgroup=sandbox.workgroup).close()
        assert calls(sandbox, "redshift-serverless.GetWorkgroup") == 1

        clock.offset = timedelta(seconds=3700)  # past it: looked up again, once
        broker.connect(workgroup=sandbox.workgroup).close()
        broker.connect(workgroup=sandbox.workgroup).close()
        assert calls(sandbox, "redshift-serverless.GetWorkgroup") == 2


def test_the_secret_is_read_again_after_its_refresh_interval(sandbox: Sandbox) -> None:
    clock = MovableClock()
    with rsauth.Broker(clock=clock, secret_refresh=300) as broker:
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        assert calls(sandbox, "secretsmanager.GetSecretValue") == 1

        clock.offset = timedelta(seconds=290)  # inside the interval: the cached secret
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        assert calls(sandbox, "secretsmanager.GetSecretValue") == 1

        clock.offset = timedelta(seconds=310)  # past it: read again, once
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        assert calls(sandbox, "secretsmanager.GetSecretValue") == 2


def test_the_endpoint_is_dropped_when_connecting_to_it_fails_for_good(sandbox: Sandbox) -> None:
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup).close()
        assert calls(sandbox, "redshift-serverless.GetWorkgroup") == 1

        # Every attempt is reset at the network level: the endpoint may have moved.
        sandbox.front_fault("reset_after_accept", count=100)
        with pytest.raises(rsauth.ConnectError):
            broker.connect(workgroup=sandbox.workgroup)
        sandbox.reset()  # the faults end; the call counts start again from zero

        broker.connect(workgroup=sandbox.workgroup).close()
        assert calls(sandbox, "redshift-serverless.GetWorkgroup") == 1
