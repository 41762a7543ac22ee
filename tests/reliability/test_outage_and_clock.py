"""A control-plane outage and a skewed local clock, with the broker's clock injected."""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.config import Config

import rsauth
from rsauth.sandbox import Sandbox
from tests.figures import Figures


class ShiftedClock:
    """The real time plus an offset the test moves."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


def select_user(connection: Any) -> str:
    cursor = connection.cursor()
    cursor.execute("select current_user")
    value = str(cursor.fetchone()[0])
    cursor.close()
    return value


def test_an_outage_is_ridden_out_until_nothing_usable_is_left(
    sandbox: Sandbox, figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ShiftedClock()
    # Few botocore attempts, so a refused connection is reported quickly.
    config = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=2)
    with rsauth.Broker(clock=clock, botocore_config=config) as broker:
        workgroup = sandbox.workgroup
        assert select_user(broker.connect(workgroup=workgroup)) == "IAM:sandbox-admin"
        lifetime = broker.credentials(workgroup=workgroup).expires_in
        assert lifetime is not None
        # Long enough that only available() below ends it.
        sandbox.unavailable(3600)

        served = 0
        # Fresh, then in the advisory window, then in the mandatory window: the cached
        # login keeps serving while every refresh fails (WARNING).
        for left in (lifetime, lifetime / 3 - 10, 60.0, 5.0):
            clock.offset = timedelta(seconds=lifetime - left)
            with broker.connect(workgroup=workgroup) as connection:
                assert select_user(connection) == "IAM:sandbox-admin"
            served += 1
        assert any(
            record.levelno == logging.WARNING and record.name.startswith("rsauth")
            for record in caplog.records
        ), "a failed refresh that keeps serving says so at WARNING"

        # Past expiry nothing usable is left: the error names the outage.
        clock.offset = timedelta(seconds=lifetime + 1)
        with pytest.raises(rsauth.ServiceError) as caught:
            broker.connect(workgroup=workgroup)
        message = str(caught.value)
        assert "redshift-serverless" in message
        assert not _reachable(sandbox.aws_url), "the plane must still be down here"

        # Once the plane is back, one call recovers.
        sandbox.available()
        with broker.connect(workgroup=workgroup) as connection:
            assert select_user(connection) == "IAM:sandbox-admin"
    figures["served_during_outage"] = served
    figures["error"] = message[:120]


def _reachable(url: str) -> bool:
    parsed = urlsplit(url)
    assert parsed.port is not None
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("skew_minutes", [-5, 5])
def test_clock_skew_does_not_change_refresh_decisions(
    sandbox: Sandbox, figures: Figures, skew_minutes: int
) -> None:
    clock = ShiftedClock(timedelta(minutes=skew_minutes))
    with rsauth.Broker(clock=clock) as broker:
        for _ in range(50):
            broker.connect(workgroup=sandbox.workgroup, duration=900).close()
        left = broker.credentials(workgroup=sandbox.workgroup, duration=900).expires_in
        stats = broker.stats()
    assert left is not None
    figures["skew_minutes"] = skew_minutes
    figures["expires_in"] = round(left, 1)
    figures["GetCredentials"] = stats["redshift-serverless.GetCredentials"]
    assert stats["redshift-serverless.GetCredentials"] == 1
    assert stats["cache.refreshes"] == 0
    # Measured on the server's clock: the full 900 s, not 900 -/+ 300.
    assert 850 < left <= 901
