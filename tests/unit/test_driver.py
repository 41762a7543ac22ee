"""What rsauth reads from and passes to redshift_connector."""

from __future__ import annotations

import inspect
import logging
import ssl
from collections.abc import Callable
from types import FunctionType
from typing import Any

import pytest
import redshift_connector
from redshift_connector.error import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

import rsauth._driver
from rsauth import ConfigurationError
from rsauth._config import SETTING_NAMES
from rsauth._driver import (
    DRIVER_CA_BUNDLE,
    DRIVER_PARAMETERS,
    LOGIN_REFUSED,
    calling_module,
    check_driver_kwargs,
    is_login_refused,
    is_tls_failure,
    is_transient,
    server_error,
    trusted_ca_file,
    with_tls,
)


def refused(code: str = "28000", cls: type[Exception] = InterfaceError) -> Exception:
    return cls(
        {"S": "FATAL", "C": code, "M": 'password authentication failed for user "IAM:alice"'}
    )


def test_driver_parameters_are_the_signatures() -> None:
    # Read off the code object at import; inspect.signature is the reference.
    expected = frozenset(inspect.signature(redshift_connector.connect).parameters)
    assert expected == DRIVER_PARAMETERS


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


def test_driver_login_keyword_refusal_names_rsauths_own_options() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_driver_kwargs({"iam": True})
    assert str(info.value) == (
        "iam= is redshift_connector's own IAM login; rsauth logs in itself: "
        "use method=, role_arn=, db_roles= or profile= instead"
    )


@pytest.mark.parametrize("code", sorted(LOGIN_REFUSED))
def test_a_refusal_is_known_by_its_sqlstate_whatever_its_words(code: str) -> None:
    # PostgreSQL's pg_hba refusal: 28000, in words that name no password.
    exc = ProgrammingError(
        {"S": "FATAL", "C": code, "M": 'no pg_hba.conf entry for host "10.0.0.1", user "alice"'}
    )
    assert is_login_refused(exc)


def test_several_suggestions_are_joined_with_or_and_capped_at_three() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_driver_kwargs({"tcp_keepalive_": 1}, SETTING_NAMES)
    # Four parameters are close; the message names the three closest.
    assert str(info.value).endswith(
        "; did you mean 'tcp_keepalive' or 'tcp_keepalive_idle' or 'tcp_keepalive_count'?"
    )


def test_an_unknown_keyword_with_nothing_close_gets_no_empty_suggestion() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_driver_kwargs({"zzzzzz": 1}, SETTING_NAMES)
    assert str(info.value) == (
        "unknown keyword 'zzzzzz': neither an rsauth option nor a parameter of "
        "redshift_connector.connect"
    )


def _ask() -> str:
    return calling_module()


def _called_from(module: str | None) -> str:
    """``calling_module()`` as called by code of module ``module`` (no ``__name__``: None)."""
    scope: dict[str, Any] = {"calling_module": calling_module}
    if module is not None:
        scope["__name__"] = module
    asked: Callable[[], str] = FunctionType(_ask.__code__, scope)
    return asked()


# mutmut (make mutate) routes every call through its trampoline, itself a caller outside
# rsauth; its mutants are checked by applying them by hand (docs/testing.md).
_UNDER_MUTMUT = hasattr(rsauth._driver, "x_calling_module__mutmut_orig")
_not_under_mutmut = pytest.mark.skipif(_UNDER_MUTMUT, reason="mutmut's trampoline is a caller")


@_not_under_mutmut
def test_the_calling_module_is_the_first_one_outside_rsauth() -> None:
    # The driver names a connection's application_name after it.
    assert calling_module() == __name__
    assert _called_from("etl.jobs") == "etl.jobs"
    assert _called_from("rsauthx") == "rsauthx"
    assert _called_from("rsauth") == __name__
    assert _called_from("rsauth._broker") == __name__


@_not_under_mutmut
def test_code_without_a_module_name_is_named_empty_not_none() -> None:
    assert _called_from(None) == ""


def test_the_ca_file_comes_from_ssl_cert_file_in_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/corporate.pem")
    assert trusted_ca_file() == "/etc/ssl/corporate.pem"
    assert trusted_ca_file({}) == str(DRIVER_CA_BUNDLE)
    monkeypatch.delenv("SSL_CERT_FILE")
    assert trusted_ca_file() == str(DRIVER_CA_BUNDLE)


def test_an_unverified_certificate_is_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rsauth"):
        assert with_tls({"ssl_insecure": True})["ssl_insecure"] is True
    assert "not verified" in caplog.text


@pytest.mark.parametrize("args", [(), (42,), ({"C": "57P01"},)])
def test_driver_errors_without_a_message_are_not_transient(args: tuple[object, ...]) -> None:
    assert not is_transient(InterfaceError(*args))
    assert not is_transient(OperationalError(*args))


def test_a_server_answer_is_not_transient_even_when_the_socket_broke_after_it() -> None:
    # The server refused the login, then the driver's socket reset: retrying as a network
    # failure would repeat a refused login.
    exc = InterfaceError({"S": "FATAL", "C": "28000", "M": "password authentication failed"})
    exc.__context__ = ConnectionResetError()
    assert not is_transient(exc)
    assert is_login_refused(exc)
