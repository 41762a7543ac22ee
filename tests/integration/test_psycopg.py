"""rsauth.psycopg against the sandbox: every method, sync and async, pools, recovery, errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from psycopg.pq import TransactionStatus

import rsauth
import rsauth.etl
import rsauth.psycopg
from rsauth.sandbox import Sandbox

WHOAMI = "select current_user, usesuper from pg_user where usename = current_user"


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


def admin_password() -> str:
    arn = boto3.client("redshift-serverless").get_namespace(namespaceName="default-namespace")[
        "namespace"
    ]["adminPasswordSecretArn"]
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return str(json.loads(secret)["password"])


def how(sandbox: Sandbox, method: str) -> dict[str, Any]:
    if method == "password":
        return {"workgroup": sandbox.workgroup, "user": "admin", "password": admin_password()}
    return {"workgroup": sandbox.workgroup, "method": method}


EXPECTED = {
    "iam": ("IAM:sandbox-admin", True),
    "secret": ("admin", True),
    "superuser": ("IAM:sandbox-admin", True),
    "password": ("admin", True),
}


def check_clean(connection: psycopg.Connection[Any]) -> None:
    """TLS in use, no transaction left open by rsauth, psycopg's prepared statements off."""
    assert connection.pgconn.ssl_in_use
    assert connection.info.transaction_status == TransactionStatus.IDLE
    assert connection.prepare_threshold is None
    assert not connection.autocommit


@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_method_connects(sandbox: Sandbox, broker: rsauth.Broker, method: str) -> None:
    with rsauth.psycopg.connect(broker=broker, **how(sandbox, method)) as connection:
        assert isinstance(connection, psycopg.Connection)
        check_clean(connection)
        row = connection.execute(WHOAMI).fetchone()
        assert row == EXPECTED[method]


@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_method_connects_async(sandbox: Sandbox, broker: rsauth.Broker, method: str) -> None:
    async def run() -> tuple[Any, TransactionStatus, bool]:
        connection = await rsauth.psycopg.connect_async(broker=broker, **how(sandbox, method))
        async with connection:
            assert isinstance(connection, psycopg.AsyncConnection)
            status = connection.info.transaction_status
            cursor = await connection.execute(WHOAMI)
            return await cursor.fetchone(), status, connection.pgconn.ssl_in_use

    row, status, tls = asyncio.run(run())
    assert row == EXPECTED[method]
    assert status == TransactionStatus.IDLE
    assert tls


def test_settings_come_from_the_environment_and_the_default_broker(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSAUTH_WORKGROUP", sandbox.workgroup)
    monkeypatch.setenv("RSAUTH_METHOD", "secret")
    with rsauth.psycopg.connect(application_name="psycopg-test") as connection:
        row = connection.execute(
            "select current_user, current_setting('application_name')"
        ).fetchone()
    assert row == ("admin", "psycopg-test")


def test_an_expired_login_is_replaced(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    rsauth.psycopg.connect(broker=broker, workgroup=sandbox.workgroup).close()
    sandbox.expire_passwords()
    with rsauth.psycopg.connect(broker=broker, workgroup=sandbox.workgroup) as connection:
        assert connection.execute("select current_user").fetchone() == ("IAM:sandbox-admin",)
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2
    assert broker.stats()["login.retries"] == 1


def test_an_expired_login_is_replaced_async(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    async def twice() -> Any:
        first = await rsauth.psycopg.connect_async(broker=broker, workgroup=sandbox.workgroup)
        await first.close()
        sandbox.expire_passwords()
        async with await rsauth.psycopg.connect_async(
            broker=broker, workgroup=sandbox.workgroup
        ) as connection:
            cursor = await connection.execute("select current_user")
            return await cursor.fetchone()

    assert asyncio.run(twice()) == ("IAM:sandbox-admin",)
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2
    assert broker.stats()["login.retries"] == 1


def test_a_rotation_in_progress_uses_the_pending_secret(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    rsauth.psycopg.connect(broker=broker, workgroup=sandbox.workgroup, method="secret").close()
    sandbox.begin_rotation()
    try:
        with rsauth.psycopg.connect(
            broker=broker, workgroup=sandbox.workgroup, method="secret"
        ) as connection:
            assert connection.execute("select current_user").fetchone() == ("admin",)
    finally:
        sandbox.finish_rotation()


# -- errors ---------------------------------------------------------------------------------


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def test_a_wrong_password_is_an_authentication_error(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    with pytest.raises(rsauth.AuthenticationError, match="password authentication failed"):
        rsauth.psycopg.connect(
            broker=broker, workgroup=sandbox.workgroup, user="admin", password="wrong-password"
        )


def test_errors_carry_no_connection_and_so_no_password(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    with pytest.raises(rsauth.AuthenticationError) as caught:
        rsauth.psycopg.connect(
            broker=broker, workgroup=sandbox.workgroup, user="admin", password="wrong-password"
        )
    chain = causes(caught.value)
    assert any(isinstance(exc, psycopg.OperationalError) for exc in chain)
    for exc in chain:
        assert getattr(exc, "pgconn", None) is None
        assert "wrong-password" not in repr(exc)


def test_a_missing_database_is_not_found(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    with pytest.raises(rsauth.NotFoundError, match="'nope' does not exist"):
        rsauth.psycopg.connect(broker=broker, workgroup=sandbox.workgroup, database="nope")


def test_an_unreachable_endpoint_is_a_connect_error(sandbox: Sandbox) -> None:
    with rsauth.Broker(sleep=lambda _: None) as broker, pytest.raises(
        rsauth.ConnectError, match="could not reach"
    ):
        rsauth.psycopg.connect(
            broker=broker, workgroup=sandbox.workgroup, host="127.0.0.1", port=1
        )


def test_the_server_certificate_is_verified(
    sandbox: Sandbox, broker: rsauth.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without SSL_CERT_FILE the CA is the Redshift bundle, which did not sign the sandbox.
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(rsauth.ConnectError, match="TLS"):
        rsauth.psycopg.connect(broker=broker, workgroup=sandbox.workgroup, method="secret")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dbname": "dev"}, "use database="),
        ({"conninfo": "host=x"}, "chosen by rsauth"),
        ({"sslmdoe": "require"}, "did you mean 'sslmode'"),
    ],
)
def test_bad_keywords_are_refused_before_any_aws_call(
    sandbox: Sandbox, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(rsauth.ConfigurationError, match=message):
        rsauth.psycopg.connect(workgroup=sandbox.workgroup, **kwargs)
    with pytest.raises(rsauth.ConfigurationError, match=message):
        rsauth.psycopg.pool(workgroup=sandbox.workgroup, kwargs=kwargs)
    assert sandbox.calls() == {}


def test_etl_copy_says_it_needs_redshift_connector(sandbox: Sandbox) -> None:
    with rsauth.psycopg.connect(workgroup=sandbox.workgroup) as connection, pytest.raises(
        rsauth.ConfigurationError, match="redshift_connector"
    ):
        rsauth.etl.copy(connection, "sales", "s3://bucket/sales/")


# -- pools ----------------------------------------------------------------------------------


def test_a_pool_outlives_expired_passwords_and_a_rotation(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    with rsauth.psycopg.pool(broker=broker, workgroup=sandbox.workgroup, max_size=2) as pool:
        assert pool.get_stats()["pool_size"] == 0  # min_size=0: nothing opened yet
        with pool.connection() as connection:
            assert connection.execute("select current_user").fetchone() == ("IAM:sandbox-admin",)
        sandbox.expire_passwords()
        with pool.connection() as connection:  # the pooled session outlives its password
            assert connection.execute("select 1").fetchone() == (1,)
            connection.close()  # the pool replaces it: a new session, a new login
        with pool.connection() as connection:
            assert connection.execute("select current_user").fetchone() == ("IAM:sandbox-admin",)
            assert connection.info.transaction_status == TransactionStatus.INTRANS
    # One fresh login, however many connections the pool opened with the expired one.
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2
    assert broker.stats()["login.retries"] >= 1

    with rsauth.psycopg.pool(
        broker=broker, workgroup=sandbox.workgroup, method="secret", max_size=1
    ) as pool:
        with pool.connection() as connection:
            connection.execute("select 1")
            connection.close()
        sandbox.rotate_secret()  # the cached secret is refused now: a fresh one is read
        with pool.connection() as connection:
            assert connection.execute("select current_user").fetchone() == ("admin",)


def test_an_async_pool_outlives_expired_passwords(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    async def use() -> list[Any]:
        users = []
        async with rsauth.psycopg.async_pool(
            broker=broker, workgroup=sandbox.workgroup, max_size=2
        ) as pool:
            for expire in (True, False):
                async with pool.connection() as connection:
                    cursor = await connection.execute("select current_user")
                    users.append(await cursor.fetchone())
                    await connection.close()  # the next one is a new session, a new login
                if expire:
                    sandbox.expire_passwords()
        return users

    assert asyncio.run(use()) == [("IAM:sandbox-admin",)] * 2
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2


def test_an_async_pool_outlives_a_secret_rotation(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    async def use() -> list[Any]:
        users = []
        async with rsauth.psycopg.async_pool(
            broker=broker, workgroup=sandbox.workgroup, method="secret", max_size=1
        ) as pool:
            for rotate in (True, False):
                async with pool.connection() as connection:
                    cursor = await connection.execute("select current_user")
                    users.append(await cursor.fetchone())
                    await connection.close()  # the next one is a new session, a new login
                if rotate:
                    sandbox.rotate_secret()  # the cached secret is refused now
        return users

    assert asyncio.run(use()) == [("admin",)] * 2
    assert broker.stats()["login.retries"] >= 1


def test_pools_refuse_the_keywords_rsauth_owns(sandbox: Sandbox) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="connection_class"):
        rsauth.psycopg.pool(workgroup=sandbox.workgroup, connection_class=psycopg.Connection)


# -- the examples ---------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("psycopg_pooled.py", "as IAM:sandbox-admin: 3 orders, 19.75 in total"),
        ("asyncio_fastapi_style.py", "20 requests served"),
    ],
)
def test_the_examples_run(sandbox: Sandbox, example: str, expected: str) -> None:
    env = {**os.environ, "RSAUTH_WORKGROUP": sandbox.workgroup}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "GetCredentials calls: 1" in result.stdout
    for entry in sandbox.issued_passwords():
        assert entry["password"] not in result.stdout + result.stderr
