"""How rsauth.psycopg reads libpq's connection failures (pure logic, no server)."""

from __future__ import annotations

import ssl

import psycopg
import pytest
from redshift_connector.error import InterfaceError, ProgrammingError

from rsauth._driver import is_login_refused, is_tls_failure, is_transient, server_error
from rsauth.psycopg import _as_driver_failure, _without_connection

AT = 'connection failed: connection to server at "wg.example.com" (10.0.0.7), port 5439 failed: '


@pytest.mark.parametrize(
    ("libpq", "code"),
    [
        ('FATAL:  password authentication failed for user "IAM:app"', "28000"),
        ("FATAL:  IAM Authentication token has expired", "28000"),
        ('FATAL:  database "nope" does not exist', "3D000"),
        ('FATAL:  role "ghost" does not exist', ""),
    ],
)
def test_server_refusals_carry_the_server_message_and_an_sqlstate(libpq: str, code: str) -> None:
    failure = _as_driver_failure(psycopg.OperationalError(AT + libpq))
    fields = server_error(failure)
    assert fields is not None
    assert fields["C"] == code
    assert fields["M"] == libpq.removeprefix("FATAL:  ")
    assert is_login_refused(failure) == (code == "28000")
    assert not is_transient(failure)


def test_the_last_of_several_attempts_is_read() -> None:
    text = (
        AT + "Connection refused\nMultiple connection attempts failed. All failures were:\n"
        "- host: 'a', port: 5439: " + AT + 'FATAL:  password authentication failed for user "u"'
    )
    failure = _as_driver_failure(psycopg.OperationalError(text))
    assert is_login_refused(failure)


@pytest.mark.parametrize(
    "libpq",
    [
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
        "connections?",
        "timeout expired",
        'could not translate host name "wg.example.com" to address: Name or service not known',
        "server closed the connection unexpectedly",
        "SSL SYSCALL error: EOF detected",
    ],
)
def test_network_failures_are_transient(libpq: str) -> None:
    failure = _as_driver_failure(psycopg.OperationalError(AT + libpq))
    assert isinstance(failure, OSError)
    assert is_transient(failure)


@pytest.mark.parametrize(
    "libpq",
    [
        "SSL error: certificate verify failed",
        'server certificate for "other.example.com" does not match host name "wg.example.com"',
        'root certificate file "/nowhere/ca.pem" does not exist',
    ],
)
def test_tls_failures_are_not_retried(libpq: str) -> None:
    failure = _as_driver_failure(psycopg.OperationalError(AT + libpq))
    assert isinstance(failure, ssl.SSLError)
    assert is_tls_failure(failure)
    assert not is_transient(failure)


def test_anything_else_keeps_libpq_message() -> None:
    failure = _as_driver_failure(psycopg.OperationalError("invalid connection option"))
    assert isinstance(failure, InterfaceError)
    assert not isinstance(failure, ProgrammingError)
    assert not is_transient(failure)
    assert str(failure) == "invalid connection option"


def test_a_copy_without_the_connection_keeps_type_and_message() -> None:
    original = psycopg.OperationalError(AT + "FATAL:  x")
    copy = _without_connection(original)
    assert type(copy) is psycopg.OperationalError
    assert str(copy) == str(original)
    assert copy.pgconn is None
