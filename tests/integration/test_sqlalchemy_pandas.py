"""SQLAlchemy, pandas and awswrangler over rsauth, against the sandbox.

The sandbox is PostgreSQL underneath: sqlalchemy-redshift's reflection
(``inspect()``, ``Table(autoload_with=)``, and the table-name probe that
``pandas.read_sql`` runs on a plain string) queries Redshift's own catalog
(``pg_class.reldiststyle``, ``svv_external_tables``), which the sandbox does not
have. These tests therefore give pandas ``sqlalchemy.text(...)`` or use
``read_sql_query``; against Redshift a plain string works as well.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awswrangler
import pandas
import pytest
import sqlalchemy
from sqlalchemy.engine import Engine

import rsauth
import rsauth.sqlalchemy
from rsauth.sandbox import Sandbox

WHO = sqlalchemy.text("select current_user")


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


@pytest.fixture
def engine(sandbox: Sandbox, broker: rsauth.Broker) -> Iterator[Engine]:
    made = rsauth.sqlalchemy.create_engine(
        workgroup=sandbox.workgroup, broker=broker, pool_size=2, max_overflow=2
    )
    yield made
    made.dispose()


def get_credentials_calls(sandbox: Sandbox) -> int:
    return sandbox.calls().get("redshift-serverless.GetCredentials", 0)


def test_the_engine_logs_in_through_the_broker(
    engine: Engine, broker: rsauth.Broker, sandbox: Sandbox
) -> None:
    assert engine.url.drivername == "redshift+redshift_connector"
    assert engine.url.password is None, "no password is frozen into the engine"
    with engine.connect() as connection:
        assert connection.execute(WHO).scalar() == "IAM:sandbox-admin"
    engine.dispose()
    with engine.connect() as connection:
        assert connection.execute(WHO).scalar() == "IAM:sandbox-admin"
    assert get_credentials_calls(sandbox) == 1, "the second connection reused the cached login"
    assert broker.stats()["cache.hits"] >= 1


def test_the_pool_keeps_working_after_every_password_expired(
    engine: Engine, broker: rsauth.Broker, sandbox: Sandbox
) -> None:
    held = engine.connect()
    assert held.execute(WHO).scalar() == "IAM:sandbox-admin"
    issued_before = len(sandbox.issued_passwords())
    assert sandbox.expire_passwords() >= 1

    # A second checkout while the first is held: the pool must open a new connection.
    with engine.connect() as fresh:
        assert fresh.execute(WHO).scalar() == "IAM:sandbox-admin"
    # The session opened before the expiry stays open, as on Redshift.
    assert held.execute(sqlalchemy.text("select 1")).scalar() == 1
    held.close()

    # Every pooled connection replaced: each new one logs in with the current login.
    engine.dispose()
    sandbox.expire_passwords()
    with engine.connect() as replaced:
        assert replaced.execute(WHO).scalar() == "IAM:sandbox-admin"

    assert len(sandbox.issued_passwords()) >= issued_before + 2, "fresh logins were fetched"
    assert sandbox.front_stats()["logins_refused"] >= 2, "the expired ones were refused"
    assert broker.stats()["login.retries"] >= 2


def test_pool_recycle_reconnects_with_current_credentials(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    engine = rsauth.sqlalchemy.create_engine(
        workgroup=sandbox.workgroup, broker=broker, pool_recycle=0.01
    )
    try:
        with engine.connect() as connection:
            first = connection.connection.dbapi_connection
            assert connection.execute(WHO).scalar() == "IAM:sandbox-admin"
        sandbox.expire_passwords()
        with engine.connect() as connection:
            assert connection.connection.dbapi_connection is not first, "recycled"
            assert connection.execute(WHO).scalar() == "IAM:sandbox-admin"
    finally:
        engine.dispose()


def test_a_url_with_a_frozen_password_stops_working_after_expiry(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    """Why rsauth.sqlalchemy exists: the plain way breaks once the password expires."""
    credentials = broker.credentials(workgroup=sandbox.workgroup)
    frozen = sqlalchemy.create_engine(
        credentials.sqlalchemy_url(include_password=True),
        connect_args={"ssl": True, "sslmode": "verify-full"},
    )
    try:
        with frozen.connect() as connection:
            assert connection.execute(WHO).scalar() == "IAM:sandbox-admin"
        frozen.dispose()
        sandbox.expire_passwords()
        with pytest.raises(sqlalchemy.exc.DBAPIError, match=r"28000|28P01|password"):
            frozen.connect()
    finally:
        frozen.dispose()


def test_the_default_broker_and_connect_args(sandbox: Sandbox) -> None:
    engine = rsauth.sqlalchemy.create_engine(
        workgroup=sandbox.workgroup, connect_args={"application_name": "rsauth-test"}
    )
    try:
        with engine.connect() as connection:
            name = connection.execute(sqlalchemy.text("show application_name")).scalar()
            assert name == "rsauth-test"
    finally:
        engine.dispose()


def test_bad_arguments_fail_before_any_connection(sandbox: Sandbox) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="did you mean 'application_name'"):
        rsauth.sqlalchemy.create_engine(
            workgroup=sandbox.workgroup, connect_args={"aplication_name": "x"}
        )
    with pytest.raises(rsauth.ConfigurationError, match="creator"):
        rsauth.sqlalchemy.create_engine(workgroup=sandbox.workgroup, creator=lambda: None)
    assert get_credentials_calls(sandbox) == 0


def test_rsauth_errors_reach_the_caller_unwrapped(sandbox: Sandbox, engine: Engine) -> None:
    sandbox.deny("IAM:sandbox-admin")
    with pytest.raises(rsauth.AccessDeniedError, match="GetCredentials"):
        engine.connect()


# -- pandas and awswrangler -----------------------------------------------------------------

ROWS = "select * from (values (1, 'a'), (2, 'b'), (3, 'c')) as t(n, letter) order by n"


def check_frame(frame: Any) -> None:
    assert list(frame.columns) == ["n", "letter"]
    assert frame["n"].tolist() == [1, 2, 3]
    assert frame["letter"].tolist() == ["a", "b", "c"]


def test_pandas_read_sql_over_an_rsauth_connection(sandbox: Sandbox) -> None:
    # pandas warns that it tests only SQLAlchemy and sqlite3 connections; it works.
    with (
        rsauth.connect(workgroup=sandbox.workgroup) as connection,
        pytest.warns(UserWarning, match="pandas only supports SQLAlchemy connectable"),
    ):
        frame = pandas.read_sql(ROWS, connection)
    check_frame(frame)


def test_pandas_read_sql_over_the_engine(engine: Engine) -> None:
    check_frame(pandas.read_sql(sqlalchemy.text(ROWS), engine))
    check_frame(pandas.read_sql_query(ROWS, engine))
    with engine.connect() as connection:
        frame = pandas.read_sql_query(
            sqlalchemy.text("select :n as n, :letter as letter"),
            connection,
            params={"n": 1, "letter": "a"},
        )
    assert frame.to_dict("records") == [{"n": 1, "letter": "a"}]


def test_awswrangler_reads_over_an_rsauth_connection(sandbox: Sandbox) -> None:
    with rsauth.connect(workgroup=sandbox.workgroup) as connection:
        frame = awswrangler.redshift.read_sql_query(ROWS, con=connection)
    check_frame(frame)


# -- the examples ---------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("sqlalchemy_pandas.py", "GetCredentials calls: 1"),
        ("notebook.py", "IAM:sandbox-admin  dev"),
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
    for entry in sandbox.issued_passwords():
        assert entry["password"] not in result.stdout + result.stderr
