"""The superuser check's own logic, against a connection that records what is done to it.

End to end it runs through the sandbox (tests/integration/test_clean_connections.py);
here each step is pinned where a unit test sees it: autocommit around the one query,
the connection closed on every refusal, the messages that say what to do.
"""

from __future__ import annotations

from typing import Any

import pytest

from rsauth import NotSuperuserError
from rsauth._sources.password import PasswordSource
from rsauth._sources.superuser import SUPERUSER_QUERY, verify_superuser


class RecordingConnection:
    """A DB-API connection that answers the check with ``row`` (or raises ``fails``)."""

    def __init__(self, row: Any = (True,), *, fails: bool = False, close_fails: bool = False):
        self.autocommit = False
        self.row = row
        self.fails = fails
        self.close_fails = close_fails
        self.executed: list[tuple[str, bool]] = []  # (statement, autocommit at the time)
        self.closed = False

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self)

    def close(self) -> None:
        if self.close_fails:
            raise OSError("the socket is gone already")
        self.closed = True


class RecordingCursor:
    def __init__(self, connection: RecordingConnection) -> None:
        self.connection = connection

    def execute(self, statement: str) -> None:
        self.connection.executed.append((statement, self.connection.autocommit))
        if self.connection.fails:
            raise RuntimeError("the query failed")

    def fetchone(self) -> Any:
        return self.connection.row

    def close(self) -> None:
        pass


def test_the_one_query_runs_in_autocommit_and_the_setting_is_put_back() -> None:
    connection = RecordingConnection()
    verify_superuser(connection, user="IAMR:admin", target="workgroup 'wg'")
    assert connection.executed == [(SUPERUSER_QUERY, True)]
    assert connection.autocommit is False, "the caller's setting is left as it was"
    connection.autocommit = True
    verify_superuser(connection, user="IAMR:admin", target="workgroup 'wg'")
    assert connection.autocommit is True


def test_not_a_superuser_is_closed_with_what_to_do() -> None:
    connection = RecordingConnection(row=(False,))
    with pytest.raises(NotSuperuserError) as refused:
        verify_superuser(connection, user="IAM:bob", target="workgroup 'wg'")
    assert connection.closed
    assert str(refused.value) == (
        "'IAM:bob' logged in to workgroup 'wg' but is not a database superuser; the "
        "connection was closed. Use role_arn= of the role that created the namespace, "
        "or method='secret' for the managed admin secret"
    )


def test_a_failed_check_fails_closed_naming_the_failure() -> None:
    connection = RecordingConnection(fails=True)
    with pytest.raises(NotSuperuserError) as refused:
        verify_superuser(connection, user="IAM:bob", target="workgroup 'wg'")
    assert connection.closed
    assert str(refused.value) == (
        "could not verify that 'IAM:bob' is a superuser on workgroup 'wg' (RuntimeError); "
        "the connection was closed"
    )
    assert connection.autocommit is False


def test_a_close_that_fails_does_not_hide_the_refusal() -> None:
    connection = RecordingConnection(row=None, close_fails=True)
    with pytest.raises(NotSuperuserError):
        verify_superuser(connection, user="IAM:bob", target="workgroup 'wg'")


def test_a_password_login_says_its_method() -> None:
    login = PasswordSource("alice", "pw").load().value
    assert (login.user, login.method) == ("alice", "password")
