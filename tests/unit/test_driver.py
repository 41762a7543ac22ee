"""What rsauth reads from and passes to redshift_connector."""

from __future__ import annotations

import logging
import ssl

import pytest
from redshift_connector.error import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from rsauth import ConfigurationError
from rsauth._config import SETTING_NAMES
from rsauth._driver import (
    check_driver_kwargs,
    is_login_refused,
    is_tls_failure,
    is_transient,
    server_error,
    with_tls,
)


def refused(code: str = "28000", cls: type[Exception] = InterfaceError) -> Exception:
    return cls(
        {"S": "FATAL", "C": code, "M": 'password authentication failed for user "IAM:alice"'}
    )


def test_known_driver_keywords_pass() -> None:
    assert check_driver_kwargs({"timeout": 5, "application_name": "etl"}) == {
        "timeout": 5,
        "application_name": "etl",
    }


def test_misspelt_keyword_is_a_configuration_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_driver_kwargs({"timout": 5}, SETTING_NAMES)
    assert "'timout'" in str(info.value)
    assert "'timeout'" in str(info.value)


def test_misspelt_rsauth_option_suggests_the_option() -> None:
    with pytest.raises(ConfigurationError, match="'workgroup'"):
        check_driver_kwargs({"workgroop": "x"}, SETTING_NAMES)


@pytest.mark.parametrize("name", ["iam", "db_user", "credentials_provider", "cluster_identifier"])
def test_driver_iam_login_keywords_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="rsauth logs in itself"):
        check_driver_kwargs({name: "x"})


def test_tls_defaults() -> None:
    assert with_tls({}) == {"ssl": True, "sslmode": "verify-full"}


def test_weaker_sslmode_is_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rsauth"):
        kwargs = with_tls({"sslmode": "verify-ca"})
    assert kwargs["sslmode"] == "verify-ca"
    assert "verify-ca" in caplog.text


def test_tls_off_is_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rsauth"):
        assert with_tls({"ssl": False})["ssl"] is False
    assert "TLS is off" in caplog.text


def test_default_tls_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rsauth"):
        with_tls({"timeout": 3})
    assert caplog.records == []


@pytest.mark.parametrize(
    "exc",
    [
        refused("28000", InterfaceError),
        refused("28P01", InterfaceError),
        refused("28000", ProgrammingError),
        refused("28P01", ProgrammingError),
    ],
)
def test_refused_login_is_detected_from_the_error_dict(exc: Exception) -> None:
    assert is_login_refused(exc)
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ProgrammingError({"S": "FATAL", "C": "3D000", "M": 'database "x" does not exist'}),
        refused("28000", IntegrityError),
        InterfaceError("communication error", ConnectionRefusedError()),
        InterfaceError("28000"),
        ValueError({"C": "28000"}),
    ],
)
def test_other_errors_are_not_refused_logins(exc: Exception) -> None:
    assert not is_login_refused(exc)


@pytest.mark.parametrize("code", ["XX000", "08006", ""])
@pytest.mark.parametrize(
    "message",
    [
        "IAM Authentication token has expired",
        'password authentication failed for user "IAM:analyst"',
    ],
)
def test_a_refusal_in_redshifts_words_is_a_refused_login_whatever_its_sqlstate(
    code: str, message: str
) -> None:
    exc = ProgrammingError({"S": "FATAL", "C": code, "M": message})
    assert is_login_refused(exc)
    assert not is_transient(exc)


def test_server_error_fields() -> None:
    assert server_error(refused())["C"] == "28000"  # type: ignore[index]
    assert server_error(InterfaceError("communication error")) is None


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        InterfaceError("communication error", ConnectionRefusedError()),
        OperationalError("connection time out", TimeoutError()),
        InterfaceError("BrokenPipe: server socket closed. Please check ..."),
    ],
)
def test_transient_network_errors(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ssl.SSLCertVerificationError("certificate verify failed"),
        InterfaceError("communication error", ssl.SSLCertVerificationError("bad cert")),
    ],
)
def test_tls_failures_are_not_retried(exc: Exception) -> None:
    assert is_tls_failure(exc)
    assert not is_transient(exc)


def test_driver_errors_without_network_cause_are_not_transient() -> None:
    assert not is_transient(InterfaceError("Server refuses SSL"))
    assert not is_transient(refused("3D000", ProgrammingError))
    assert not is_transient(ValueError("nope"))
