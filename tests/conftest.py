"""Shared fixtures: one sandbox per test session, and a clean environment per test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from rsauth.sandbox import Sandbox

# Variables that would point boto3, redshift_connector or rsauth somewhere else.
_ENV_PREFIXES = ("AWS_", "RSAUTH_", "SSL_CERT_", "PG")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without AWS, rsauth or libpq settings from the machine."""
    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Sandbox]:
    with Sandbox(seed=1234) as sb:
        yield sb


@pytest.fixture
def sandbox(sandbox_session: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The session's sandbox, its environment applied, faults and counts cleared."""
    sandbox_session.reset()
    for key, value in sandbox_session.env.items():
        monkeypatch.setenv(key, value)
    yield sandbox_session
    sandbox_session.reset()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
