"""Connections rsauth hands out carry nothing from rsauth's own work.

No open transaction, no changed setting, no temporary object, so the admin
jobs that cannot run in a transaction (``VACUUM``, ``CREATE DATABASE``) work
once the caller sets ``autocommit``. And rsauth runs as few queries of its
own as it can (Serverless bills each for at least 60 s of compute): none,
except one per login for ``method="superuser"``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redshift_connector.core
import sqlalchemy

import rsauth
import rsauth.sqlalchemy
from rsauth.sandbox import Sandbox

METHODS = ["iam", "secret", "superuser", "password"]


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement redshift_connector sends, including its own ``begin``/``rollback``."""
    sent: list[str] = []
    real = redshift_connector.core.Connection.execute

    def spy(self: Any, cursor: Any, operation: str, vals: Any) -> None:
        sent.append(operation)
        real(self, cursor, operation, vals)

    monkeypatch.setattr(redshift_connector.core.Connection, "execute", spy)
    return sent


def options(method: str) -> dict[str, Any]:
    if method != "password":
        return {"method": method}
    namespace = boto3.client("redshift-serverless").get_namespace(
        namespaceName="default-namespace"
    )["namespace"]
    secret = boto3.client("secretsmanager").get_secret_value(
        SecretId=namespace["adminPasswordSecretArn"]
    )
    document = json.loads(secret["SecretString"])
    return {"user": document["username"], "password": document["password"]}


def session_settings(connection: Any) -> list[tuple[str, str]]:
    cursor = connection.cursor()
    cursor.execute("select name, setting from pg_settings where source = 'session' order by 1")
    rows = [(str(name), str(value)) for name, value in cursor.fetchall()]
    cursor.close()
    return rows


def assert_clean(connection: Any) -> None:
    assert not connection.in_transaction, "rsauth left a transaction open"
    assert connection.autocommit is False, "rsauth changed the driver's autocommit default"
    connection.autocommit = True
    cursor = connection.cursor()
    # Both refuse to run inside a transaction block; VACUUM of a catalog table any user
    # may ask for (a non-owner gets a WARNING, not an error).
    cursor.execute("vacuum pg_catalog.pg_am")
    cursor.execute("select pg_my_temp_schema()::int")
    assert cursor.fetchone()[0] == 0, "rsauth left a temporary object"
    cursor.close()
    assert session_settings(connection) == [], "rsauth changed a session setting"


@pytest.mark.parametrize("method", METHODS)
def test_a_connection_carries_no_state_from_rsauth(
    sandbox: Sandbox, broker: rsauth.Broker, statements: list[str], method: str
) -> None:
    chosen = options(method)
    for _ in range(2):
        with broker.connect(workgroup=sandbox.workgroup, **chosen) as connection:
            statements.clear()
            assert_clean(connection)


def test_a_superuser_connection_runs_create_database(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    with broker.connect(workgroup=sandbox.workgroup, method="superuser") as connection:
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute(f"create database {name}")
        cursor.execute(f"drop database {name}")
        cursor.close()


@pytest.mark.parametrize("method", METHODS)
def test_rsauth_runs_one_query_per_superuser_login_and_none_otherwise(
    sandbox: Sandbox, broker: rsauth.Broker, statements: list[str], method: str
) -> None:
    chosen = options(method)
    sent: list[list[str]] = []
    for _ in range(3):
        statements.clear()
        broker.connect(workgroup=sandbox.workgroup, **chosen).close()
        sent.append(list(statements))
    if method == "superuser":
        # The check of the first connection is the login's verdict; the others reuse it.
        assert len(sent[0]) == 1
        assert "usesuper" in sent[0][0]
        assert sent[1:] == [[], []]
    else:
        assert sent == [[], [], []]


def test_a_superuser_credentials_call_runs_the_check_once(
    sandbox: Sandbox, broker: rsauth.Broker, statements: list[str]
) -> None:
    broker.credentials(workgroup=sandbox.workgroup, method="superuser")
    broker.credentials(workgroup=sandbox.workgroup, method="superuser")
    broker.connect(workgroup=sandbox.workgroup, method="superuser").close()
    assert len(statements) == 1


@pytest.mark.parametrize("method", METHODS)
def test_an_engine_connection_carries_no_state_from_rsauth(
    sandbox: Sandbox, broker: rsauth.Broker, method: str
) -> None:
    engine = rsauth.sqlalchemy.create_engine(
        workgroup=sandbox.workgroup, broker=broker, **options(method)
    )
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sqlalchemy.text("vacuum pg_catalog.pg_am"))
            settings = connection.execute(
                sqlalchemy.text("select name from pg_settings where source = 'session'")
            ).all()
            assert settings == []
    finally:
        engine.dispose()
