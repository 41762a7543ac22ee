"""Connects under load while the sandbox misbehaves: faults, rotation, expiry."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import rsauth
from rsauth.sandbox import Sandbox
from tests.figures import Figures
from tests.reliability.conftest import Scale

pytestmark = pytest.mark.slow


def select_one(connection: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("select 1")
    assert cursor.fetchone()[0] == 1
    cursor.close()


def hammer(
    scale: Scale, connect: Callable[[], Any], stop: threading.Event | None = None
) -> tuple[int, list[BaseException]]:
    """``scale.threads`` threads, each connecting ``connects_per_thread`` times."""
    done = Counter[str]()
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(scale.threads)

    def worker() -> None:
        start.wait()
        for _ in range(scale.connects_per_thread):
            try:
                with connect() as connection:
                    select_one(connection)
                outcome = "ok"
            except Exception as exc:  # every failure is a finding: collected, asserted below
                with lock:
                    failures.append(exc)
                outcome = "failed"
            with lock:
                done[outcome] += 1

    threads = [threading.Thread(target=worker) for _ in range(scale.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    if stop is not None:
        stop.set()
    return done["ok"], failures


def describe(failures: list[BaseException]) -> str:
    kinds = Counter(f"{type(exc).__name__}: {exc}"[:200] for exc in failures)
    return "; ".join(f"{count} x {kind}" for kind, count in kinds.most_common(5))


def test_load_with_faults(sandbox: Sandbox, scale: Scale, figures: Figures) -> None:
    sandbox.throttle(fraction=0.05, seed=11)
    sandbox.server_error(fraction=0.01, seed=12)
    sandbox.latency(0.2, fraction=0.2, seed=13)
    sandbox.front_fault("reset_after_accept", fraction=0.02, seed=14)
    with rsauth.Broker() as broker:
        ok, failures = hammer(scale, lambda: broker.connect(workgroup=sandbox.workgroup))
        stats = broker.stats()
    calls = sandbox.calls()
    figures["connects"] = ok + len(failures)
    figures["failed"] = len(failures)
    figures["front_resets"] = sandbox.front_stats()["injected"]["reset_after_accept"]
    figures["connect_retries"] = stats["connect.retries"]
    figures["GetCredentials"] = calls.get("redshift-serverless.GetCredentials", 0)
    figures["GetWorkgroup"] = calls.get("redshift-serverless.GetWorkgroup", 0)
    assert not failures, describe(failures)
    # One login and one lookup, plus botocore's retries of the injected faults: at most
    # 5 attempts each. A dropped endpoint (a connect that failed for good) would add more.
    assert figures.values["GetCredentials"] <= 5
    assert figures.values["GetWorkgroup"] <= 5


def test_rotation_under_load(sandbox: Sandbox, scale: Scale, figures: Figures) -> None:
    stop = threading.Event()
    rotations = Counter[str]()

    def rotate() -> None:
        while not stop.is_set():
            # A rotation every ~2 s, each with a 1 s AWSPENDING window in which the
            # database already holds the new password and AWSCURRENT the old one.
            sandbox.rotate_secret(pause=1.0)
            rotations["done"] += 1
            stop.wait(1.0)

    rotator = threading.Thread(target=rotate)
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()
        rotator.start()
        try:
            ok, failures = hammer(
                scale, lambda: broker.connect(workgroup=sandbox.workgroup, method="secret"),
                stop,
            )
        finally:
            stop.set()
            rotator.join(60)
        stats = broker.stats()
    figures["connects"] = ok + len(failures)
    figures["failed"] = len(failures)
    figures["rotations"] = rotations["done"]
    figures["login_retries"] = stats["login.retries"]
    figures["GetSecretValue"] = sandbox.calls().get("secretsmanager.GetSecretValue", 0)
    assert rotations["done"] >= 1
    assert not failures, describe(failures)


def test_expiry_under_load(sandbox: Sandbox, scale: Scale, figures: Figures) -> None:
    stop = threading.Event()
    expired = Counter[str]()

    def expire() -> None:
        while not stop.wait(1.5):  # a wave: every issued password expires at once
            expired["passwords"] += sandbox.expire_passwords()

    expirer = threading.Thread(target=expire)
    with rsauth.Broker() as broker:
        expirer.start()
        try:
            ok, failures = hammer(
                scale, lambda: broker.connect(workgroup=sandbox.workgroup), stop
            )
        finally:
            stop.set()
            expirer.join(60)
        stats = broker.stats()
    figures["connects"] = ok + len(failures)
    figures["failed"] = len(failures)
    figures["passwords_expired"] = expired["passwords"]
    figures["login_retries"] = stats["login.retries"]
    figures["GetCredentials"] = sandbox.calls().get("redshift-serverless.GetCredentials", 0)
    assert expired["passwords"] >= 1
    assert not failures, describe(failures)


def test_short_lifetimes_are_refreshed_ahead(
    sandbox: Sandbox, scale: Scale, figures: Figures
) -> None:
    """Credentials living 3 s, used for longer: refreshed ahead, never refused."""
    sandbox.set_credential_lifetime(3)
    deadline = time.monotonic() + scale.seconds
    connects = 0
    with rsauth.Broker() as broker:
        while time.monotonic() < deadline:
            with broker.connect(workgroup=sandbox.workgroup) as connection:
                select_one(connection)
            connects += 1
        stats = broker.stats()
    figures["connects"] = connects
    figures["GetCredentials"] = sandbox.calls().get("redshift-serverless.GetCredentials", 0)
    figures["refreshes"] = stats["cache.refreshes"]
    figures["login_retries"] = stats["login.retries"]
    assert stats["login.retries"] == 0, "a refresh ahead of expiry means no refused login"
    assert figures.values["GetCredentials"] >= scale.seconds / 3
