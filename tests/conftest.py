"""Shared fixtures: one sandbox per test session, and a clean environment per test."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from typing import Any

import botocore.parsers
import pytest

import rsauth._api
from rsauth.sandbox import Sandbox


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False,
        help="run tests/reliability at soak scale (32 threads x 300 connects, ...): make soak",
    )


# Read once at import: the per-test environment is cleaned, CI's own variable with it.
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true")

# Variables that would point boto3, redshift_connector or rsauth somewhere else.
_ENV_PREFIXES = ("AWS_", "RSAUTH_", "SSL_CERT_", "PG")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without AWS, rsauth or libpq settings from the machine.

    ``RSAUTH_SANDBOX_*`` (which PostgreSQL the sandbox runs) is kept.
    """
    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES) and not key.startswith("RSAUTH_SANDBOX_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _fresh_default_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's ``rsauth.connect`` starts from a default Broker of its own, as each
    process does: one made by an earlier test would keep that test's AWS session."""
    monkeypatch.setattr(rsauth._api, "_default", None)
    yield
    made = rsauth._api._default
    if made is not None:
        made.close()


# The sandboxes started in this test session, for the leak scan.
_STARTED: list[Sandbox] = []


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Sandbox]:
    with Sandbox(seed=1234) as sb:
        _STARTED.append(sb)
        try:
            yield sb
        finally:
            _STARTED.remove(sb)


# Secrets met in this process beyond the sandbox's passwords: every secret-bearing
# field of every AWS response botocore parsed (KMS data keys, STS session keys and
# tokens, secret values, passwords), fleet keys, store passwords. Never cleared: a
# secret met in one test must not show up in a later one either.
_REGISTERED: set[str] = set()

# Response fields whose values are secrets: the members of shapes marked "sensitive"
# in botocore/data/{kms/2014-11-01,secretsmanager/2017-10-17,redshift-serverless/
# 2021-04-21,sts/2011-06-15}/service-2.json, and STS's SessionToken.
_SECRET_FIELDS = frozenset({
    "Plaintext", "SecretAccessKey", "SessionToken", "SecretString", "SecretBinary",
    "dbPassword", "adminUserPassword", "RandomPassword",
})


def register_secret(value: str | bytes) -> None:
    """Fail any test whose log records hold ``value``: text as it is, bytes in every form
    they may be written in (their repr, base64 in both alphabets, hex)."""
    if isinstance(value, str):
        forms = {value}
    else:
        forms = {
            repr(bytes(value))[2:-1],
            base64.b64encode(value).decode().rstrip("="),
            base64.urlsafe_b64encode(value).decode().rstrip("="),
            bytes(value).hex(),
        }
    # Shorter strings would match by chance (and no real secret is that short).
    _REGISTERED.update(form for form in forms if len(form) >= 12)


def _register_response_secrets(parsed: Any) -> None:
    if isinstance(parsed, dict):
        for name, value in parsed.items():
            if name in _SECRET_FIELDS and isinstance(value, str | bytes | bytearray):
                register_secret(value if isinstance(value, str) else bytes(value))
            else:
                _register_response_secrets(value)
    elif isinstance(parsed, list):
        for item in parsed:
            _register_response_secrets(item)


@pytest.fixture(autouse=True, scope="session")
def _register_aws_secrets() -> Iterator[None]:
    """Every AWS response parsed in this process has its secret fields registered."""
    original = botocore.parsers.ResponseParser.parse

    def parse(self: Any, response: Any, shape: Any) -> Any:
        parsed = original(self, response, shape)
        _register_response_secrets(parsed)
        return parsed

    botocore.parsers.ResponseParser.parse = parse  # type: ignore[method-assign]  # a spy
    try:
        yield
    finally:
        botocore.parsers.ResponseParser.parse = original  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def quiet_sandbox_session() -> Iterator[Sandbox]:
    """A second sandbox for tests of a workgroup that sleeps: sessions other tests leave
    open would keep the shared one awake."""
    with Sandbox() as sb:
        _STARTED.append(sb)
        try:
            yield sb
        finally:
            _STARTED.remove(sb)


@pytest.fixture
def quiet_sandbox(
    quiet_sandbox_session: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    """The quiet sandbox, its environment applied, faults, counts and sleep cleared."""
    quiet_sandbox_session.reset()
    for key, value in quiet_sandbox_session.env.items():
        monkeypatch.setenv(key, value)
    yield quiet_sandbox_session
    quiet_sandbox_session.reset()


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with DEBUG logging captured; a password the session's
    sandbox ever issued (or its secret access key), or a registered secret, in any
    record fails it."""
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    for sb in _STARTED:
        assert_no_secret_in(records, sb)
    if not _STARTED:
        assert_no_secret_in(records, None)


@pytest.fixture
def sandbox(sandbox_session: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The session's sandbox, its environment applied, faults and counts cleared."""
    sandbox_session.reset()
    for key, value in sandbox_session.env.items():
        monkeypatch.setenv(key, value)
    yield sandbox_session
    sandbox_session.reset()


def secrets_of(sb: Sandbox | None) -> set[str]:
    """Every password the sandbox issued, the sandbox's secret access key, and every
    registered secret (:func:`register_secret`)."""
    found = set(_REGISTERED)
    if sb is not None:
        found.update(entry["password"] for entry in sb.issued_passwords())
        found.add(sb.env["AWS_SECRET_ACCESS_KEY"])
    return found


def assert_no_secret_in(records: list[logging.LogRecord], sb: Sandbox | None) -> None:
    secrets = secrets_of(sb)
    for record in records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"a secret appears in a log record of {record.name}: {record.msg!r}"



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI=true`` a skip is a failure: every real part a test needs (PostgreSQL,
    redis-server, psql, pyarrow, psycopg) is installed by ``make test``, so a missing
    one is a broken build, not a reason to pass quietly."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not hasattr(report, "wasxfail"):
        _fail_skip_in_ci(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped at import (``pytest.importorskip``)."""
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())  # type: ignore[attr-defined]


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and _IN_CI:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every part must be present: {reason}"
