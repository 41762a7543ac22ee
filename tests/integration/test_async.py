"""The asyncio API against the sandbox: off the loop, single flight, cancellation, many loops.

Each test drives its coroutines with ``asyncio.run``. Where the AWS calls ran is
recorded by a botocore ``before-send`` hook on the broker's session and compared
with the event loop's thread; no test measures a duration.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from redshift_connector.core import Connection as RedshiftConnection

import rsauth
import rsauth.psycopg
from rsauth.sandbox import Sandbox

TASKS = 1000
DEADLINE = 60.0


@dataclass
class Sent:
    """AWS requests a broker sent: the operation and the thread that sent it."""

    requests: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    get_credentials: threading.Event = field(default_factory=threading.Event)

    def __call__(self, request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else target).split(".")[-1]
        with self.lock:
            self.requests.append((operation, threading.get_ident()))
        if operation == "GetCredentials":
            self.get_credentials.set()

    def threads(self) -> set[int]:
        with self.lock:
            return {thread for _, thread in self.requests}

    def operations(self) -> list[str]:
        with self.lock:
            return [operation for operation, _ in self.requests]


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def broker(sandbox: Sandbox, sent: Sent) -> Iterator[rsauth.Broker]:
    session = boto3.Session()
    # Handlers on the session reach every client made from it afterwards (botocore copies
    # the session's event emitter into each client: botocore/session.py, create_client).
    session.events.register("before-send", sent)
    with rsauth.Broker(session) as broker:
        yield broker


async def wait_for(event: threading.Event) -> None:
    """Until ``event`` is set (deadline: a deadlock guard), without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not event.is_set():
        assert loop.time() < deadline, "the state was never reached"
        await asyncio.sleep(0.005)


def test_a_thousand_tasks_on_a_cold_cache_make_one_call_off_the_loop(
    sandbox: Sandbox, broker: rsauth.Broker, sent: Sent
) -> None:
    sandbox.latency(0.3)

    async def burst() -> tuple[int, list[rsauth.Credentials]]:
        tasks = [broker.credentials_async(workgroup=sandbox.workgroup) for _ in range(TASKS)]
        return threading.get_ident(), await asyncio.gather(*tasks)

    loop_thread, results = asyncio.run(burst())
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 1
    assert sent.operations().count("GetCredentials") == 1
    assert loop_thread not in sent.threads()
    assert sent.threads()  # the hook saw the calls
    assert {credentials.user for credentials in results} == {"IAM:sandbox-admin"}
    assert len({credentials.password for credentials in results}) == 1
    assert broker._flights.in_flight() == 0


def test_tasks_and_threads_share_one_flight(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    sandbox.latency(0.3)
    start = threading.Barrier(8)
    users: list[str] = []
    failures: list[BaseException] = []

    async def tasks() -> None:
        start.wait()
        found = await asyncio.gather(
            *(broker.credentials_async(workgroup=sandbox.workgroup) for _ in range(100))
        )
        users.extend(credentials.user for credentials in found)

    def in_loop() -> None:
        try:
            asyncio.run(tasks())
        except BaseException as exc:  # reported below
            failures.append(exc)

    def blocking() -> None:
        try:
            start.wait()
            users.append(broker.credentials(workgroup=sandbox.workgroup).user)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=in_loop) for _ in range(4)]
    threads += [threading.Thread(target=blocking) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not failures
    assert users == ["IAM:sandbox-admin"] * 404
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 1


def test_cancelling_half_mid_flight_leaves_the_others_and_later_calls_working(
    sandbox: Sandbox, broker: rsauth.Broker, sent: Sent
) -> None:
    sandbox.latency(0.3)

    async def scenario() -> tuple[list[Any], rsauth.Credentials]:
        tasks = [
            asyncio.ensure_future(broker.credentials_async(workgroup=sandbox.workgroup))
            for _ in range(TASKS)
        ]
        await wait_for(sent.get_credentials)  # the one flight is waiting on AWS
        for task in tasks[::2]:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        later = await broker.credentials_async(workgroup=sandbox.workgroup)
        return outcomes, later

    outcomes, later = asyncio.run(scenario())
    cancelled = outcomes[::2]
    finished = outcomes[1::2]
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in cancelled)
    assert all(isinstance(outcome, rsauth.Credentials) for outcome in finished)
    assert later == finished[0]
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 1
    assert broker._flights.in_flight() == 0


def test_a_flight_whose_waiters_all_left_still_fills_the_cache(
    sandbox: Sandbox, broker: rsauth.Broker, sent: Sent
) -> None:
    sandbox.latency(0.3)

    async def leave() -> None:
        tasks = [
            asyncio.ensure_future(broker.credentials_async(workgroup=sandbox.workgroup))
            for _ in range(10)
        ]
        await wait_for(sent.get_credentials)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(leave())
    # The next call joins the flight if it is still running, or hits the cache it filled.
    credentials = asyncio.run(broker.credentials_async(workgroup=sandbox.workgroup))
    assert credentials.user == "IAM:sandbox-admin"
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 1


def test_a_failed_flight_is_not_kept(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    sandbox.deny("IAM:sandbox-admin")

    async def burst() -> list[Any]:
        return await asyncio.gather(
            *(broker.credentials_async(workgroup=sandbox.workgroup) for _ in range(50)),
            return_exceptions=True,
        )

    outcomes = asyncio.run(burst())
    assert all(isinstance(outcome, rsauth.AccessDeniedError) for outcome in outcomes)
    sandbox.allow("IAM:sandbox-admin")
    credentials = asyncio.run(broker.credentials_async(workgroup=sandbox.workgroup))
    assert credentials.user == "IAM:sandbox-admin"
    assert broker._flights.in_flight() == 0


def test_connect_async_returns_a_redshift_connector_connection_opened_off_the_loop(
    sandbox: Sandbox, broker: rsauth.Broker, sent: Sent
) -> None:
    async def connect() -> tuple[int, Any]:
        connection = await broker.connect_async(workgroup=sandbox.workgroup)
        return threading.get_ident(), connection

    loop_thread, connection = asyncio.run(connect())
    with connection:
        assert isinstance(connection, RedshiftConnection)
        cursor = connection.cursor()
        cursor.execute("select current_user, current_setting('application_name')")
        row = cursor.fetchone()
        assert row is not None
        user, application = row
        cursor.close()
        assert user == "IAM:sandbox-admin"
        # Named after this module, not after a frame of the worker thread.
        assert application == __name__
        origin = rsauth._broker.connection_origin(connection)
        assert origin is not None
        assert origin.method == "iam"
    assert sent.threads()
    assert loop_thread not in sent.threads()


def test_the_module_level_functions_use_the_default_broker(sandbox: Sandbox) -> None:
    async def both() -> tuple[rsauth.Credentials, str]:
        credentials = await rsauth.get_credentials_async(
            workgroup=sandbox.workgroup, method="secret"
        )
        connection = await rsauth.connect_async(workgroup=sandbox.workgroup, method="secret")
        with connection:
            cursor = connection.cursor()
            cursor.execute("select current_user")
            row = cursor.fetchone()
            assert row is not None
            user = str(row[0])
            cursor.close()
        return credentials, user

    credentials, user = asyncio.run(both())
    assert credentials.method == "secret"
    assert user == credentials.user


def test_bad_settings_raise_in_the_awaiting_task(sandbox: Sandbox) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="method"):
        asyncio.run(rsauth.get_credentials_async(workgroup=sandbox.workgroup, method="nope"))
    with pytest.raises(rsauth.ConfigurationError, match="sslmdoe"):
        asyncio.run(rsauth.connect_async(workgroup=sandbox.workgroup, sslmdoe="verify-full"))


def test_a_cancelled_psycopg_connect_leaves_no_session_open(
    sandbox: Sandbox, broker: rsauth.Broker, sent: Sent
) -> None:
    sandbox.latency(0.3)
    before = sandbox.front_stats()["sessions_open"]

    async def scenario() -> dict[str, Any]:
        task = asyncio.ensure_future(
            rsauth.psycopg.connect_async(broker=broker, workgroup=sandbox.workgroup)
        )
        await wait_for(sent.get_credentials)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The worker goes on: it logs in, opens the session, and rsauth closes it on this loop.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            stats = sandbox.front_stats()
            if stats["logins_ok"] >= 1 and stats["sessions_open"] == before:
                return stats
            assert loop.time() < deadline, f"the session was left open: {stats}"
            await asyncio.sleep(0.01)

    stats = asyncio.run(scenario())
    assert stats["logins_ok"] == 1
    # The login it fetched serves the next caller.
    credentials = asyncio.run(broker.credentials_async(workgroup=sandbox.workgroup))
    assert credentials.user == "IAM:sandbox-admin"
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 1


def test_psycopg_connect_async_logs_in_off_the_loop(
    sandbox: Sandbox, broker: rsauth.Broker, sent: Sent
) -> None:
    async def connect() -> int:
        connection = await rsauth.psycopg.connect_async(broker=broker, workgroup=sandbox.workgroup)
        await connection.close()
        return threading.get_ident()

    loop_thread = asyncio.run(connect())
    assert "GetCredentials" in sent.operations()
    assert loop_thread not in sent.threads()
