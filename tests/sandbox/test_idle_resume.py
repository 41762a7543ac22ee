"""A workgroup that sleeps: its next connection waits for the SSL answer while it resumes.

Serverless bills no compute while no queries run
(https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-billing.html) and
answers the next connection after a pause; the pause is a sandbox setting
(unverified on AWS). The tests force "asleep now" with ``idle_after=0`` and
end a long resume by re-timing it, so nothing waits for idleness or a resume
by the wall clock: they wait for states the front reports.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Any

import boto3
import pytest
import redshift_connector
from tests._idle import LONG, idle, wait_for

from rsauth.sandbox import Sandbox, SandboxError
from rsauth.sandbox._idle import IdleResume
from rsauth.sandbox._pgwire import SSL_REQUEST


@pytest.fixture
def sb(quiet_sandbox: Sandbox) -> Sandbox:
    """The sandbox of tests/conftest.py whose workgroup no other test keeps awake."""
    return quiet_sandbox


def credentials() -> tuple[str, str]:
    # A session of its own: boto3's default one may hold another sandbox's keys.
    answer = boto3.session.Session().client("redshift-serverless").get_credentials(
        workgroupName="default-workgroup"
    )
    return answer["dbUser"], answer["dbPassword"]


def connect(sb: Sandbox, user: str, password: str) -> Any:
    return redshift_connector.connect(
        host=sb.host, port=sb.port, database=sb.database, user=user, password=password,
        ssl=True, sslmode="verify-full", timeout=120,
    )


def ssl_request(sb: Sandbox) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", sb.port), timeout=60)
    sock.sendall(struct.pack("!ii", 8, SSL_REQUEST))
    return sock


def nothing_received(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(60)
    return False


def test_a_sleeping_workgroup_holds_the_ssl_answer_until_it_resumes(sb: Sandbox) -> None:
    sb.set_idle_resume(LONG, idle_after=0)
    wait_for(lambda: idle(sb)["state"] == "asleep", "the workgroup to sleep")
    with ssl_request(sb) as sock:
        wait_for(lambda: idle(sb)["held"] == 1, "the connection to be held")
        assert idle(sb)["state"] == "resuming"
        assert sb.front_stats()["connections"] == 1, "accepted at once"
        assert nothing_received(sock), "the SSL request is not answered while resuming"
        # Re-timed: the resume ends a moment after it began, i.e. now.
        sb.set_idle_resume(0.01, idle_after=LONG)
        assert sock.recv(1) == b"S"
        after = idle(sb)
        assert (after["held"], after["held_total"], after["resumes"]) == (0, 1, 1)
        assert after["state"] == "awake"


def test_a_connection_to_a_sleeping_workgroup_logs_in_once_it_has_resumed(
    sb: Sandbox,
) -> None:
    user, password = credentials()
    sb.set_idle_resume(0.5, idle_after=0)
    wait_for(lambda: idle(sb)["state"] == "asleep", "the workgroup to sleep")
    with connect(sb, user, password) as connection:
        assert connection.cursor().execute("select 1").fetchone()[0] == 1
        after = idle(sb)
        assert (after["held_total"], after["resumes"], after["state"]) == (1, 1, "awake")


def test_connections_during_a_resume_all_wait_and_all_proceed(sb: Sandbox) -> None:
    user, password = credentials()
    sb.set_idle_resume(LONG, idle_after=0)
    wait_for(lambda: idle(sb)["state"] == "asleep", "the workgroup to sleep")
    results: list[object] = []

    def run() -> None:
        try:
            with connect(sb, user, password) as connection:
                results.append(connection.cursor().execute("select 1").fetchone()[0])
        except Exception as exc:  # reported through results
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(5)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: idle(sb)["held"] == 5, "all five connections to be held")
        assert sb.front_stats()["logins_ok"] == 0
        assert results == [], "none refused, none through"
        sb.set_idle_resume(0.01, idle_after=LONG)
    finally:
        for thread in threads:
            thread.join(120)
    assert results == [1] * 5
    after = idle(sb)
    assert (after["held_total"], after["resumes"]) == (5, 1), "one resume for all"
    assert sb.front_stats()["logins_ok"] == 5


def test_an_open_session_keeps_the_workgroup_awake(sb: Sandbox) -> None:
    user, password = credentials()
    with connect(sb, user, password) as first:
        sb.set_idle_resume(LONG, idle_after=0)
        assert idle(sb)["state"] == "awake"
        with connect(sb, user, password) as second:
            assert second.cursor().execute("select 2").fetchone()[0] == 2
        assert first.cursor().execute("select 1").fetchone()[0] == 1
        assert (idle(sb)["held_total"], idle(sb)["resumes"]) == (0, 0)
    # Once the last session has closed, "no open session" is real: it sleeps.
    wait_for(lambda: idle(sb)["state"] == "asleep", "the workgroup to sleep")
    with ssl_request(sb) as sock:
        wait_for(lambda: idle(sb)["held"] == 1, "the connection to be held")
        sb.set_idle_resume(0)
        assert sock.recv(1) == b"S", "turning it off ends the resume under way"


def test_seconds_zero_turns_it_off(sb: Sandbox) -> None:
    user, password = credentials()
    sb.set_idle_resume(LONG, idle_after=0)
    wait_for(lambda: idle(sb)["state"] == "asleep", "the workgroup to sleep")
    sb.set_idle_resume(0, idle_after=0)
    assert idle(sb)["state"] == "off"
    with connect(sb, user, password) as connection:
        assert connection.cursor().execute("select 1").fetchone()[0] == 1
    assert (idle(sb)["held_total"], idle(sb)["resumes"]) == (0, 0)


def test_bad_settings_name_the_field(sb: Sandbox) -> None:
    with pytest.raises(SandboxError, match="seconds must be >= 0"):
        sb.set_idle_resume(-1)
    with pytest.raises(SandboxError, match="idle_after must be >= 0"):
        sb.set_idle_resume(5, idle_after=-1)
    assert idle(sb)["state"] == "off"


# -- the idle clock, with an injected clock ---------------------------------------------


def test_the_idle_time_counts_from_the_last_connection_closing() -> None:
    now = [1000.0]
    gate = IdleResume(clock=lambda: now[0])
    assert gate.state() == "off"
    gate.configure(5, idle_after=60)
    assert gate.state() == "awake"
    now[0] += 59.9
    assert gate.state() == "awake"
    now[0] += 0.1
    assert gate.state() == "asleep"

    async def one_connection_while_awake() -> None:
        gate.bind(asyncio.get_running_loop())
        now[0] -= 30  # awake again (the fake clock went back inside idle_after)
        await gate.admit()
        assert gate.snapshot()["open"] == 1
        now[0] += 3600  # an open connection keeps it awake however long
        assert gate.state() == "awake"
        gate.leave()

    asyncio.run(one_connection_while_awake())
    assert gate.state() == "awake", "idle time restarts when the last connection closes"
    now[0] += 60
    assert gate.state() == "asleep"
