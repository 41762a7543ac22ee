"""Many threads over one Broker while logins refresh and caches are dropped under them."""

from __future__ import annotations

import threading
import time
import traceback

import pytest

import rsauth
from rsauth.sandbox import Sandbox
from tests.conftest import secrets_of
from tests.figures import Figures
from tests.reliability.conftest import Scale


def test_no_torn_or_expired_credential_is_handed_out(
    sandbox: Sandbox, scale: Scale, figures: Figures
) -> None:
    sandbox.set_credential_lifetime(4)  # refresh windows every few seconds
    handed_out: list[tuple[rsauth.Credentials, float]] = []
    problems: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    invalidations = 0

    with rsauth.Broker() as broker:

        def reader() -> None:
            while not stop.is_set():
                try:
                    credentials = broker.credentials(workgroup=sandbox.workgroup)
                except Exception as exc:  # every failure is a finding
                    with lock:
                        problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                handed_at = time.time()
                left = credentials.expires_in
                with lock:
                    handed_out.append((credentials, handed_at))
                    if left is None or left <= 0:
                        problems.append(f"handed out with {left} s left")

        def invalidator() -> None:
            nonlocal invalidations
            while not stop.wait(0.05):
                broker.invalidate(workgroup=sandbox.workgroup)
                invalidations += 1

        threads = [threading.Thread(target=reader) for _ in range(scale.threads * 2)]
        threads.append(threading.Thread(target=invalidator))
        for thread in threads:
            thread.start()
        # Run through several lifetimes and many invalidations, however fast the machine is.
        lifetimes = 3 if not scale.soak else 15
        give_up = time.monotonic() + 300  # a deadlock guard, not a timing check
        while time.monotonic() < give_up and not (
            invalidations >= 20 * lifetimes
            and sandbox.calls().get("redshift-serverless.GetCredentials", 0) >= lifetimes
        ):
            stop.wait(0.1)
        stop.set()
        for thread in threads:
            thread.join(60)

    issued = {entry["password"]: entry for entry in sandbox.issued_passwords()}
    for credentials, handed_at in handed_out:
        entry = issued.get(credentials.password)
        if entry is None or entry["user"] != credentials.user:
            problems.append("a password that was never issued to that user")
            continue
        assert credentials.expires_at is not None
        # The sandbox runs on this machine's clock, so its expiry is the truth here.
        if entry["expires_at"] <= handed_at:
            problems.append("handed out after the password had expired")
        # rsauth's expiry may be earlier than the truth (measured from when the request
        # was sent), never later: a later one would come from another login (torn).
        if credentials.expires_at.timestamp() > entry["expires_at"] + 0.5:
            problems.append("an expiry later than that password's own (torn)")
    figures["credentials_handed_out"] = len(handed_out)
    figures["distinct_logins"] = len({c.password for c, _ in handed_out})
    figures["invalidations"] = invalidations
    figures["problems"] = len(problems)
    assert handed_out
    assert figures.values["distinct_logins"] >= lifetimes, "the run crossed several lifetimes"
    assert not problems, problems[:5]


def test_no_secret_in_any_error_or_traceback(sandbox: Sandbox) -> None:
    """Provoke each error class and look for secrets in its message and traceback."""
    seen: list[BaseException] = []

    def capture(call: object) -> None:
        assert callable(call)
        with pytest.raises(rsauth.RsauthError) as caught:
            call()
        seen.append(caught.value)

    with rsauth.Broker() as broker:
        admin = broker.credentials(workgroup=sandbox.workgroup, method="secret")
        # The database refuses a wrong password.
        capture(lambda: broker.connect(method="password", host=admin.host, port=admin.port,
                                       user=admin.user, password=admin.password + "x"))
        # AWS denies the identity; then an unknown workgroup; then the front refuses.
        sandbox.deny("IAM:sandbox-admin")
        capture(lambda: broker.connect(workgroup=sandbox.workgroup))
        sandbox.allow("IAM:sandbox-admin")
        capture(lambda: broker.connect(workgroup="no-such-workgroup"))
        sandbox.front_fault("refuse", 10)
        capture(lambda: broker.connect(method="password", host=admin.host, port=admin.port,
                                       user=admin.user, password=admin.password))
        sandbox.reset()
        capture(lambda: broker.connect(workgroup="Bad_Name"))
    kinds = {type(exc) for exc in seen}
    assert {rsauth.AuthenticationError, rsauth.AccessDeniedError, rsauth.NotFoundError,
            rsauth.ConnectError, rsauth.ConfigurationError} <= kinds
    secrets = secrets_of(sandbox)
    for exc in seen:
        text = "".join(traceback.format_exception(exc))
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"{type(exc).__name__} shows a secret"
