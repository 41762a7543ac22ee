"""Real PostgreSQL clients through the proxy: psql, redshift_connector, psycopg 3, SQLAlchemy."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redshift_connector

from rsauth.proxy import Proxy, SessionRecord
from rsauth.sandbox import Sandbox
from tests.proxy.conftest import ProxyFactory
from tests.proxy.helpers import statement_running, wait_for

psycopg = pytest.importorskip("psycopg")

PSQL = shutil.which("psql")
needs_psql = pytest.mark.skipif(PSQL is None, reason="psql is not installed")

BROKERED = "IAM:sandbox-admin"
SLEEP = "select pg_sleep(60)"


def conninfo(proxy: Proxy, **extra: str) -> str:
    parts = {
        "host": "127.0.0.1",
        "port": str(proxy.port),
        "user": "anyone",
        "dbname": "dev",
        "connect_timeout": "30",
        **extra,
    }
    return " ".join(f"{key}={value}" for key, value in parts.items())


def psql(proxy: Proxy, sql: str, **extra: str) -> subprocess.CompletedProcess[str]:
    assert PSQL is not None
    return subprocess.run(
        [PSQL, conninfo(proxy, **extra), "-XAtc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "30"},
    )


@needs_psql
def test_psql_without_tls_logs_in_as_the_brokered_user(proxy: Proxy) -> None:
    done = psql(proxy, "select current_user, current_database()", sslmode="disable")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{BROKERED}|dev"


@needs_psql
def test_psql_verifies_the_proxy_certificate(proxy: Proxy) -> None:
    assert proxy.ca_path is not None
    done = psql(
        proxy,
        "select current_user, ssl from pg_stat_ssl join pg_stat_activity using (pid) "
        "where pid = pg_backend_pid()",
        sslmode="verify-full",
        sslrootcert=str(proxy.ca_path),
    )
    assert done.returncode == 0, done.stderr
    # Upstream is TLS as well: the sandbox's PostgreSQL sees the front, which terminated it.
    assert done.stdout.strip().startswith(BROKERED)


@needs_psql
def test_psql_refuses_a_proxy_it_cannot_verify(proxy: Proxy, tmp_path: Any) -> None:
    other = tmp_path / "other-ca.pem"
    trustme = pytest.importorskip("trustme")
    trustme.CA().cert_pem.write_to_path(str(other))
    done = psql(proxy, "select 1", sslmode="verify-full", sslrootcert=str(other))
    assert done.returncode != 0
    assert "certificate verify failed" in done.stderr


def test_redshift_connector_through_the_proxy(
    proxy: Proxy, trust: Callable[[Proxy], str]
) -> None:
    trust(proxy)
    connection = redshift_connector.connect(
        host="127.0.0.1", port=proxy.port, user="anyone", password="ignored", database="dev"
    )
    try:
        cursor = connection.cursor()
        cursor.execute("select current_user, current_database()")
        assert cursor.fetchone() == [BROKERED, "dev"]
    finally:
        connection.close()


def test_psycopg_logs_in_and_the_database_is_honoured(
    proxy: Proxy, sandbox: Sandbox, records: list[SessionRecord]
) -> None:
    with psycopg.connect(conninfo(proxy, sslmode="require")) as connection:
        row = connection.execute("select current_user, current_database()").fetchone()
        assert row == (BROKERED, "dev")
    # Another database: the login for it is fetched and used.
    with psycopg.connect(conninfo(proxy, dbname="postgres", sslmode="require")) as connection:
        row = connection.execute("select current_user, current_database()").fetchone()
        assert row == (BROKERED, "postgres")
    wait_for(lambda: len(records) == 2, "two session records")
    assert [record.database for record in records] == ["dev", "postgres"]
    assert all(record.user == BROKERED and record.error is None for record in records)
    assert all(record.bytes_in > 0 and record.bytes_out > 0 for record in records)


def test_startup_parameters_reach_the_database(proxy: Proxy) -> None:
    info = conninfo(proxy, sslmode="disable", application_name="nightly-report")
    with psycopg.connect(info, options="-c search_path=pg_catalog") as connection:
        name = connection.execute("select current_setting('application_name')").fetchone()
        path = connection.execute("show search_path").fetchone()
    assert name == ("nightly-report",)
    assert path == ("pg_catalog",)


def test_sqlalchemy_engine_through_the_proxy(proxy: Proxy) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://anyone@127.0.0.1:{proxy.port}/dev?sslmode=require"
    )
    try:
        with engine.connect() as connection:
            user = connection.execute(sqlalchemy.text("select current_user")).scalar_one()
        assert user == BROKERED
    finally:
        engine.dispose()


def test_cancel_stops_a_running_statement(proxy: Proxy, sandbox: Sandbox) -> None:
    with psycopg.connect(conninfo(proxy, sslmode="require"), autocommit=True) as connection:
        failure: list[BaseException] = []

        def run() -> None:
            try:
                connection.execute(SLEEP)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: statement_running(sandbox, SLEEP), "pg_sleep to run")
        connection.cancel_safe()
        thread.join(30)
        assert not thread.is_alive()
        assert failure
        assert isinstance(failure[0], psycopg.errors.QueryCanceled)
        # The session is still usable.
        assert connection.execute("select 1").fetchone() == (1,)


@needs_psql
def test_psql_ctrl_c_cancels_pg_sleep(proxy: Proxy, sandbox: Sandbox) -> None:
    assert PSQL is not None
    process = subprocess.Popen(
        [PSQL, conninfo(proxy, sslmode="disable"), "-Xc", SLEEP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        wait_for(lambda: statement_running(sandbox, SLEEP), "pg_sleep to run")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert "canceling statement due to user request" in stderr


def test_open_sessions_outlive_expiry_and_new_ones_log_in_fresh(
    proxy: Proxy, sandbox: Sandbox
) -> None:
    with psycopg.connect(conninfo(proxy, sslmode="require")) as first:
        assert first.execute("select 1").fetchone() == (1,)
        fetched = sandbox.calls().get("redshift-serverless.GetCredentials", 0)
        assert sandbox.expire_passwords() > 0
        # The open session is not re-checked, as on Redshift.
        assert first.execute("select current_user").fetchone() == (BROKERED,)
        # A new session: the cached login is refused, a fresh one is fetched and used.
        with psycopg.connect(conninfo(proxy, sslmode="require")) as second:
            assert second.execute("select current_user").fetchone() == (BROKERED,)
        assert sandbox.calls().get("redshift-serverless.GetCredentials", 0) == fetched + 1
    assert proxy.stats()["logins_refused"] == 1


def test_secret_sessions_get_in_during_a_rotation(
    make_proxy: ProxyFactory, sandbox: Sandbox
) -> None:
    proxy = make_proxy(method="secret")
    with psycopg.connect(conninfo(proxy, sslmode="require")) as connection:
        before = connection.execute("select current_user").fetchone()
    sandbox.begin_rotation()
    try:
        for _ in range(2):
            with psycopg.connect(conninfo(proxy, sslmode="require")) as connection:
                assert connection.execute("select current_user").fetchone() == before
    finally:
        sandbox.finish_rotation()
    # The pending version that worked was kept: one refusal, not one per session.
    assert proxy.stats()["logins_refused"] == 1


def test_two_hundred_concurrent_sessions(proxy: Proxy) -> None:
    barrier = threading.Barrier(200, timeout=120)
    failures: list[BaseException] = []
    users: list[str] = []

    def session() -> None:
        try:
            with psycopg.connect(conninfo(proxy, sslmode="disable")) as connection:
                barrier.wait()  # all 200 open at once
                for _ in range(5):
                    row = connection.execute("select current_user").fetchone()
                users.append(row[0] if row else "")
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=session) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not failures, failures[:3]
    assert users == [BROKERED] * 200
    stats = proxy.stats()
    assert stats["sessions_total"] == 200
    wait_for(lambda: proxy.stats()["sessions_open"] == 0, "sessions to close")


def test_superuser_is_checked_once_per_login_not_per_session(
    make_proxy: ProxyFactory, sandbox: Sandbox
) -> None:
    proxy = make_proxy(method="superuser")
    assert proxy.wait_ready(60)
    for _ in range(3):
        with psycopg.connect(conninfo(proxy, sslmode="disable")) as connection:
            row = connection.execute(
                "select usesuper from pg_user where usename = current_user"
            ).fetchone()
            assert row == (True,)
    # Three sessions and one check per login: the readiness login (no database named) and
    # the login for 'dev' are two logins. No query of the proxy's own runs per session.
    assert sandbox.front_stats()["logins_ok"] == 3 + 2
