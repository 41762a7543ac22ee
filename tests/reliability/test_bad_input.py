"""Malformed input to every public entry point is a ConfigurationError naming the field,
raised before any network call, never a traceback from deeper down."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rsauth
from rsauth._api import default_broker

WORKGROUP = re.compile(r"[a-z0-9-]{3,64}")
DB_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$.\-]{0,126}")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")

# Values of the wrong type for any field.
junk = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2),
)


def not_matching(pattern: re.Pattern[str]) -> st.SearchStrategy[str]:
    return st.text(max_size=80).filter(lambda s: not pattern.fullmatch(s.strip()))


# Characters that no setting may hold: C0 controls (NUL, newline, ...), DEL, C1 controls.
control = st.characters(codec=None, categories=["Cc"])
# Digits of other scripts: str.isdigit() and re's \d accept them, int() reads some.
foreign_digits = st.text(
    alphabet=st.characters(categories=["Nd", "No"]).filter(lambda c: not c.isascii()),
    min_size=1, max_size=6,
)
non_ascii = st.characters(min_codepoint=0x80).filter(lambda c: c.isprintable())


def with_control(good: str) -> st.SearchStrategy[str]:
    """``good`` with a control character put somewhere in it."""
    return st.tuples(st.integers(0, len(good)), control).map(
        lambda at: good[: at[0]] + at[1] + good[at[0]:]
    )


def with_non_ascii(good: str) -> st.SearchStrategy[str]:
    return st.tuples(st.integers(0, len(good)), non_ascii).map(
        lambda at: good[: at[0]] + at[1] + good[at[0]:]
    )


def longer_than(limit: int, alphabet: str = "abc") -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=limit + 1, max_size=limit + 200)


ROLE = "arn:aws:iam::123456789012:role/etl"

# For each field, values that must be refused (with the other fields valid).
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "database": st.one_of(
        with_control("dev"), longer_than(127),
        st.text(alphabet="\u00e9\u4e2d", min_size=64, max_size=100),  # > 127 bytes in UTF-8
        st.just(""), junk.filter(lambda v: v is not None),
    ),
    "secret_id": st.one_of(
        with_control("app/login"), with_non_ascii("app/login"), longer_than(2048),
        junk.filter(lambda v: v is not None),
    ),
    "host": st.one_of(
        with_control("db.example.com"), with_non_ascii("db.example.com"), longer_than(253),
        st.sampled_from(["db example.com", "-db.example.com", "db..example.com", "db_x.com"]),
    ),
    "user": st.one_of(
        with_control("alice"), longer_than(127),
        st.text(alphabet="\u00fc", min_size=64, max_size=100),
    ),
    "password": st.one_of(with_control("hunter2-pw"), junk.filter(lambda v: v is not None)),
    "region": st.one_of(
        with_control("eu-west-1"), with_non_ascii("eu-west-1"), longer_than(63),
        foreign_digits.map(lambda d: f"eu-west-{d}"), st.from_regex(r"\A[0-9]{1,5}\Z"),
        st.sampled_from(["eu west 1", "-eu-west-1", "eu-west-1-", "eu_west_1", "eu.west"]),
    ),
    "profile": with_control("prod"),
    "custom_domain": st.one_of(
        with_control("db.example.com"), with_non_ascii("db.example.com"), longer_than(253),
    ),
    "workgroup": st.one_of(not_matching(WORKGROUP), junk.filter(lambda v: v is not None),
                           with_control("analytics"), foreign_digits.map(lambda d: f"wg{d}")),
    "duration": st.one_of(
        st.integers().filter(lambda n: not 900 <= n <= 3600),
        st.text(max_size=6).filter(lambda s: not (s.strip().isascii() and s.strip().isdigit()
                                                  and 900 <= int(s.strip()) <= 3600)),
    ),
    "method": st.text(max_size=12).filter(
        lambda s: s.strip().lower() not in {"auto", "iam", "secret", "superuser", "password", ""}
    ),
    "role_arn": st.one_of(
        not_matching(ROLE_ARN).filter(bool), st.integers(), with_control(ROLE),
        st.text(alphabet=non_ascii, min_size=1, max_size=8).map(lambda n: ROLE + n),
        foreign_digits.map(lambda d: f"arn:aws:iam::{d}:role/etl"),
        longer_than(2048 - len(ROLE)).map(lambda n: ROLE + n),
    ),
    "port": st.one_of(
        foreign_digits,
        st.integers().filter(lambda n: not 1 <= n <= 65535),
        st.text(max_size=5).filter(
            lambda s: not (s.isascii() and s.isdigit() and 1 <= int(s) <= 65535)
        ),
    ),
    "db_roles": st.one_of(
        # Not a database role name as rsauth accepts it (letters, digits, _ $ . -).
        st.lists(st.text(max_size=5).filter(lambda s: not DB_ROLE.fullmatch(s)),
                 min_size=1, max_size=3),
        st.integers(),
    ),
}


class ClosedAws:
    """AWS endpoints that refuse every connection: any network call is a failure here."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for service in ("REDSHIFT_SERVERLESS", "STS", "IAM", "SECRETS_MANAGER", "S3"):
            monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", "http://127.0.0.1:9")
        monkeypatch.setenv("AWS_REGION", "eu-west-1")


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[rsauth.Broker]:
    ClosedAws(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    session = boto3.Session(aws_access_key_id="AKIAEXAMPLEEXAMPLE00",
                            aws_secret_access_key="not-a-real-secret", region_name="eu-west-1")
    with rsauth.Broker(session=session) as made:
        yield made


def aws_calls(broker: rsauth.Broker) -> int:
    return sum(v for k, v in broker.stats().items() if "." in k and k[0].islower()
               and not k.startswith(("aws.", "cache.", "login.", "connect.")))


ENTRY_POINTS: dict[str, Callable[[rsauth.Broker], Callable[..., Any]]] = {
    "Broker.connect": lambda b: b.connect,
    "Broker.credentials": lambda b: b.credentials,
    "rsauth.connect": lambda b: rsauth.connect,
    "rsauth.get_credentials": lambda b: rsauth.get_credentials,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("field", sorted(BAD_VALUES))
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_values_are_configuration_errors_naming_the_field(
    broker: rsauth.Broker, entry: str, field: str, data: st.DataObject
) -> None:
    value = data.draw(BAD_VALUES[field], label=field)
    arguments: dict[str, Any] = {"workgroup": "analytics"}
    if field in {"port", "host", "user", "password"}:
        arguments.update(method="password", host="db.example.com", user="u", password="p")
    if field == "db_roles":
        arguments["role_arn"] = ROLE
    if field in {"secret_id", "custom_domain"}:
        del arguments["workgroup"]
    arguments[field] = value
    # Both brokers live across examples (and the default one across the session): deltas.
    before, default_before = aws_calls(broker), aws_calls(default_broker())
    with pytest.raises(rsauth.ConfigurationError) as caught:
        ENTRY_POINTS[entry](broker)(**arguments)
    assert field in str(caught.value)
    if field == "password":
        assert repr(value) not in str(caught.value)
        assert "hunter2" not in str(caught.value)
    assert aws_calls(broker) == before
    assert aws_calls(default_broker()) == default_before


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.from_regex(r"[a-z_]{2,12}", fullmatch=True).filter(
    lambda n: n not in {"timeout", "application_name", "ssl", "sslmode", "tcp_keepalive"}),
    value=st.integers())
def test_unknown_driver_keywords_are_refused_by_name(
    broker: rsauth.Broker, name: str, value: int
) -> None:
    import inspect

    import redshift_connector

    if name in inspect.signature(redshift_connector.connect).parameters:
        return
    driver_keywords: dict[str, Any] = {name: value}
    with pytest.raises(rsauth.ConfigurationError, match=name):
        broker.connect(workgroup="analytics", **driver_keywords)
    assert aws_calls(broker) == 0


def test_missing_aws_credentials_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ClosedAws(monkeypatch)
    with rsauth.Broker(session=boto3.Session(region_name="eu-west-1")) as broker, \
            pytest.raises(rsauth.ConfigurationError, match="credentials"):
        broker.connect(workgroup="analytics")


CLI_FLAGS: dict[str, st.SearchStrategy[str]] = {
    "--workgroup": not_matching(WORKGROUP).filter(lambda s: s and not s.startswith("-")),
    "--duration": st.text(max_size=6).filter(
        lambda s: s and not s.startswith("-")
        and not (s.strip().isascii() and s.strip().isdigit() and 900 <= int(s) <= 3600)
    ),
    "--method": st.text(min_size=1, max_size=10).filter(
        lambda s: not s.startswith("-")
        and s not in {"auto", "iam", "secret", "superuser"}
    ),
    "--role-arn": not_matching(ROLE_ARN).filter(lambda s: s and not s.startswith("-")),
    # Passed as --flag=VALUE, so any value reaches rsauth (argv cannot carry NUL: not drawn).
    "--database": st.one_of(with_control("dev"), longer_than(127)),
    "--secret-id": st.one_of(with_control("app"), with_non_ascii("app"), longer_than(2048)),
    "--region": st.one_of(with_control("eu-west-1"), with_non_ascii("eu-west-1"),
                          foreign_digits.map(lambda d: f"eu-west-{d}"), longer_than(63)),
    "--profile": with_control("prod"),
}


@pytest.mark.parametrize("command", ["credentials", "whoami", "sql"])
@pytest.mark.parametrize("flag", sorted(CLI_FLAGS))
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_cli_flags_are_usage_errors_naming_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str,
    flag: str, data: st.DataObject,
) -> None:
    from rsauth._cli import main

    ClosedAws(monkeypatch)
    value = data.draw(CLI_FLAGS[flag].filter(lambda v: "\0" not in v), label=flag)
    argv = [command, "--workgroup", "analytics", f"{flag}={value}"]
    if command == "sql":
        argv.append("select 1")
    code: int | str | None
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert flag.lstrip("-").split("-")[0] in err
    assert "Traceback" not in err
