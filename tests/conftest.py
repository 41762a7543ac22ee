"""Shared fixtures: one sandbox per test session, and a clean environment per test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

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


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with DEBUG logging captured; a password the session's
    sandbox ever issued (or its secret access key) in any record fails it."""
    caplog.set_level(logging.DEBUG)
    yield
    for sb in _STARTED:
        records = caplog.get_records("setup") + caplog.get_records("call")
        assert_no_secret_in(records, sb)


@pytest.fixture
def sandbox(sandbox_session: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The session's sandbox, its environment applied, faults and counts cleared."""
    sandbox_session.reset()
    for key, value in sandbox_session.env.items():
        monkeypatch.setenv(key, value)
    yield sandbox_session
    sandbox_session.reset()


def secrets_of(sb: Sandbox) -> set[str]:
    """Every password the sandbox issued, and the sandbox's secret access key."""
    found = {entry["password"] for entry in sb.issued_passwords()}
    found.add(sb.env["AWS_SECRET_ACCESS_KEY"])
    return found


def assert_no_secret_in(records: list[logging.LogRecord], sb: Sandbox) -> None:
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
