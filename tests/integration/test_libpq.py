"""``Credentials.as_env()`` alone is enough for libpq clients (psql) to log in, verified."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

import rsauth
from rsauth.sandbox import Sandbox

PSQL = shutil.which("psql") or "/usr/bin/psql"
needs_psql = pytest.mark.skipif(not shutil.which(PSQL), reason="no PostgreSQL client")


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


@needs_psql
def test_psql_logs_in_with_as_env_alone(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    env = broker.credentials(workgroup=sandbox.workgroup).as_env()
    assert env["PGSSLROOTCERT"] == sandbox.env["SSL_CERT_FILE"]
    result = subprocess.run(
        [PSQL, "-X", "-At", "-c", "select current_user"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "IAM:sandbox-admin"
