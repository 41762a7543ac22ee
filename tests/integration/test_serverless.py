"""Connecting the way Serverless behaves: a workgroup that resumes, one being modified,
and the words Redshift refuses an expired temporary password with.

The resume tests use a sandbox of their own: sessions other tests leave open would
keep a shared one awake. Nothing here waits by the wall clock: a long resume is
ended by re-timing it, and the tests wait for states the front reports.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from tests._idle import LONG, idle, wait_for

import rsauth
from rsauth.sandbox import Sandbox


@pytest.fixture
def sleepy(quiet_sandbox: Sandbox) -> Sandbox:
    """The sandbox of tests/conftest.py whose workgroup no other test keeps awake."""
    return quiet_sandbox


def resuming_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "rsauth" and "is resuming" in record.getMessage()
    ]


def select_one(connection: Any) -> Any:
    return connection.cursor().execute("select 1").fetchone()[0]


def asleep(sb: Sandbox, seconds: float) -> None:
    sb.set_idle_resume(seconds, idle_after=0)
    wait_for(lambda: idle(sb)["state"] == "asleep", "the workgroup to sleep")


# -- a workgroup that resumes -----------------------------------------------------------


def test_a_resume_longer_than_the_driver_timeout_is_waited_out_in_one_connect(
    sleepy: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with rsauth.Broker(resume_timeout=120) as broker:
        broker.credentials(workgroup=sleepy.workgroup)  # the login first: AWS is awake
        asleep(sleepy, 5)
        before = sleepy.front_stats()
        # timeout=1 would have failed the held answer: it bounds each read, not the resume.
        with broker.connect(workgroup=sleepy.workgroup, timeout=1) as connection:
            assert select_one(connection) == 1
            assert connection._usock.gettimeout() == 1, "the driver's timeout is back"
    after = sleepy.front_stats()
    assert after["connections"] - before["connections"] == 1, "no second attempt"
    assert after["logins_ok"] - before["logins_ok"] == 1, "one session at the server"
    assert (idle(sleepy)["resumes"], idle(sleepy)["held_total"]) == (1, 1)
    lines = resuming_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"workgroup {sleepy.workgroup!r} is resuming; waited ")
    assert [r.levelno for r in caplog.records if "is resuming" in r.getMessage()] == [
        logging.INFO
    ]


def test_a_resume_longer_than_resume_timeout_is_a_connect_error_naming_it(
    sleepy: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with rsauth.Broker() as broker:
        broker.credentials(workgroup=sleepy.workgroup)
        asleep(sleepy, LONG)
        before = sleepy.front_stats()["connections"]
        try:
            with pytest.raises(rsauth.ConnectError) as caught:
                broker.connect(workgroup=sleepy.workgroup, resume_timeout=1)
        finally:
            sleepy.set_idle_resume(0)  # ends the resume under way
    message = str(caught.value)
    assert "did not resume within 1 s" in message
    assert "resume_timeout" in message
    assert "authentication" not in message.lower()
    assert "refused" not in message
    assert sleepy.front_stats()["connections"] - before == 1, "no second attempt"
    assert resuming_lines(caplog) == []


def test_the_resume_timeout_comes_from_the_environment(
    sleepy: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSAUTH_RESUME_TIMEOUT", "1")
    with rsauth.Broker() as broker:
        broker.credentials(workgroup=sleepy.workgroup)
        asleep(sleepy, LONG)
        try:
            with pytest.raises(rsauth.ConnectError, match="did not resume within 1 s"):
                broker.connect(workgroup=sleepy.workgroup)
        finally:
            sleepy.set_idle_resume(0)


def test_an_awake_workgroup_logs_no_resume(
    sleepy: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with rsauth.Broker() as broker, broker.connect(workgroup=sleepy.workgroup, timeout=30) as c:
        assert select_one(c) == 1
        assert c._usock.gettimeout() == 30
    assert resuming_lines(caplog) == []


def test_a_port_with_no_server_still_fails_fast_as_unreachable(sleepy: Sandbox) -> None:
    # A port nothing listens on: the TCP connect is refused, no resume is waited for.
    with rsauth.Broker(connect_attempts=1) as broker, pytest.raises(
        rsauth.ConnectError, match="could not reach"
    ) as caught:
        broker.connect(
            method="password", host="127.0.0.1", port=_closed_port(), user="u",
            password="p-not-secret", ssl=False, resume_timeout=LONG,
        )
    assert "resume" not in str(caught.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_other_threads_sockets_are_untouched_while_one_waits(sleepy: Sandbox) -> None:
    with rsauth.Broker() as broker:
        broker.credentials(workgroup=sleepy.workgroup)
        asleep(sleepy, LONG)
        outcome: list[object] = []

        def held() -> None:
            try:
                with broker.connect(workgroup=sleepy.workgroup) as connection:
                    outcome.append(select_one(connection))
            except Exception as exc:  # reported through outcome
                outcome.append(exc)

        thread = threading.Thread(target=held)
        thread.start()
        try:
            wait_for(lambda: idle(sleepy)["held"] == 1, "the connect to be held")
            import socket

            with socket.socket() as other:
                assert other.gettimeout() is None
        finally:
            sleepy.set_idle_resume(0.01, idle_after=LONG)
            thread.join(120)
        assert outcome == [1]


def test_bad_resume_timeouts_name_the_field() -> None:
    with pytest.raises(rsauth.ConfigurationError, match="resume_timeout=0"):
        rsauth.Broker(resume_timeout=0)
    with pytest.raises(rsauth.ConfigurationError, match="RSAUTH_RESUME_TIMEOUT='soon'"):
        rsauth.Broker(environ={"RSAUTH_RESUME_TIMEOUT": "soon"}).credentials(
            workgroup="default-workgroup"
        )


# -- a workgroup being modified ---------------------------------------------------------


def test_a_workgroup_being_modified_is_connected_to_with_a_cold_cache(sandbox: Sandbox) -> None:
    sandbox.set_workgroup_status("MODIFYING")
    with rsauth.Broker() as broker, broker.connect(workgroup=sandbox.workgroup) as connection:
        assert select_one(connection) == 1


def test_a_workgroup_being_modified_is_connected_to_with_a_warm_cache(sandbox: Sandbox) -> None:
    with rsauth.Broker() as broker:
        broker.credentials(workgroup=sandbox.workgroup)  # the endpoint is cached
        sandbox.set_workgroup_status("MODIFYING")
        broker.invalidate()  # and forgotten: the rule does not hang on the cache
        with broker.connect(workgroup=sandbox.workgroup) as connection:
            assert select_one(connection) == 1
        with broker.connect(workgroup=sandbox.workgroup) as connection:  # cached again
            assert select_one(connection) == 1


# -- refusals in Redshift's words -------------------------------------------------------


def test_an_expired_temporary_password_is_replaced_by_a_fresh_login_and_one_retry(
    sandbox: Sandbox,
) -> None:
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup).close()
        assert sandbox.expire_passwords() >= 1
        before = sandbox.front_stats()
        with broker.connect(workgroup=sandbox.workgroup) as connection:
            assert select_one(connection) == 1
        after = sandbox.front_stats()
        # The front answered "IAM Authentication token has expired" once, then let the
        # fresh login in: one retry, one more GetCredentials.
        assert after["logins_refused"] - before["logins_refused"] == 1
        assert after["logins_ok"] - before["logins_ok"] == 1
        assert broker.stats()["login.retries"] == 1
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2
