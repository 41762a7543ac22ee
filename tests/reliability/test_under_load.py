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
    scale: Scale,
    connect: Callable[[], Any],
    stop: threading.Event | None = None,
    until: Callable[[], bool] = lambda: True,
) -> tuple[int, list[BaseException]]:
    """``scale.threads`` threads, each connecting ``connects_per_thread`` times and then
    on until ``until()`` holds, so a scenario runs through the events it is about
    (rotations, expiry waves) however fast or slow the machine is."""
    done = Counter[str]()
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(scale.threads)
    # A deadlock guard, not a timing check: a scenario that never reaches ``until``
    # ends here and fails its own assertion on the events it counted.
    give_up = time.monotonic() + 600

    def worker() -> None:
        start.wait()
        made = 0
        while made < scale.connects_per_thread or not (until() or time.monotonic() > give_up):
            made += 1
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
        thread.join(900)
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
                stop, until=lambda: rotations["done"] >= 2,
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
    assert rotations["done"] >= 2, "the load ran through two whole rotations"
    assert not failures, describe(failures)


def test_expiry_under_load(sandbox: Sandbox, scale: Scale, figures: Figures) -> None:
    stop = threading.Event()
    expired = Counter[str]()

    def expire() -> None:
        while not stop.wait(1.5):  # a wave: every issued password expires at once
            count = sandbox.expire_passwords()
            expired["passwords"] += count
            expired["waves"] += 1 if count else 0

    expirer = threading.Thread(target=expire)
    with rsauth.Broker() as broker:
        expirer.start()
        try:
            ok, failures = hammer(
                scale, lambda: broker.connect(workgroup=sandbox.workgroup), stop,
                until=lambda: expired["waves"] >= 2,
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
    assert expired["waves"] >= 2, "the load ran through two waves that expired passwords"
    assert not failures, describe(failures)


def test_short_lifetimes_are_refreshed_ahead(
    sandbox: Sandbox, scale: Scale, figures: Figures
) -> None:
    """Credentials living 3 s, used for longer: refreshed ahead, never refused."""
    sandbox.set_credential_lifetime(3)
    lifetimes = 3 if not scale.soak else 20
    give_up = time.monotonic() + 300  # a deadlock guard, not a timing check
    connects = 0
    with rsauth.Broker() as broker:
        # On through several lifetimes, however fast the machine connects.
        while (
            sandbox.calls().get("redshift-serverless.GetCredentials", 0) < lifetimes
            and time.monotonic() < give_up
        ):
            with broker.connect(workgroup=sandbox.workgroup) as connection:
                select_one(connection)
            connects += 1
        stats = broker.stats()
    figures["connects"] = connects
    figures["GetCredentials"] = sandbox.calls().get("redshift-serverless.GetCredentials", 0)
    figures["refreshes"] = stats["cache.refreshes"]
    figures["login_retries"] = stats["login.retries"]
    assert stats["login.retries"] == 0, "a refresh ahead of expiry means no refused login"
    assert figures.values["GetCredentials"] >= lifetimes, "the run crossed several lifetimes"
    assert stats["cache.refreshes"] >= 1, "at least one login was replaced ahead of expiry"
