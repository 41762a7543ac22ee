"""A cold start does less, side by side: the AWS calls a first connect needs that do not
depend on each other are in flight at once, no call is made that the connect does not
need, and a fresh process loads only what its first connect uses.

"Side by side" is checked at the sandbox, not by the clock: a rendezvous holds the first
call of each operation until the other has arrived, so calls made one after another
never meet (its timeout is only a deadlock guard).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

import rsauth
from rsauth.sandbox import Sandbox

GET_CREDENTIALS = "redshift-serverless.GetCredentials"
GET_WORKGROUP = "redshift-serverless.GetWorkgroup"

# Loaded on first use, never by `import rsauth` nor by a first connect.
LAZY_MODULES = (
    "asyncio", "tenacity", "difflib", "rsauth._async", "rsauth._fleet", "rsauth._cli",
    "rsauth.etl", "rsauth.sqlalchemy", "rsauth.sandbox", "rsauth.proxy", "rsauth.psycopg",
    "sqlalchemy", "redis", "cryptography", "psycopg",
    # The other login methods' sources, the namespace roles rsauth.etl checks, and the
    # backoff between retries.
    "rsauth._sources.password", "rsauth._sources.secret", "rsauth._sources.superuser",
    "rsauth._roles", "rsauth._backoff",
)


def select_one(connection: Any) -> Any:
    cursor = connection.cursor()
    cursor.execute("select 1")
    return cursor.fetchone()[0]


def lookup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rsauth-endpoint-lookup"]


def test_a_cold_connect_asks_for_the_login_and_the_endpoint_side_by_side(
    sandbox: Sandbox,
) -> None:
    sandbox.rendezvous("GetCredentials", "GetWorkgroup")
    with rsauth.Broker() as broker, broker.connect(workgroup=sandbox.workgroup) as connection:
        assert select_one(connection) == 1
    met = sandbox.rendezvous_result()
    assert met is not None
    assert met["met"] is True
    assert sorted(met["arrived"]) == ["GetCredentials", "GetWorkgroup"]
    # Nothing else: the caller's identity is the access key's, read locally (STS is asked
    # only to name an identity AWS refused).
    assert sandbox.calls() == {GET_CREDENTIALS: 1, GET_WORKGROUP: 1}
    assert lookup_threads() == []


def test_get_credentials_on_a_cold_cache_asks_both_side_by_side(sandbox: Sandbox) -> None:
    sandbox.rendezvous("GetCredentials", "GetWorkgroup")
    with rsauth.Broker() as broker:
        credentials = broker.credentials(workgroup=sandbox.workgroup)
        assert (credentials.host, credentials.port) == (sandbox.host, sandbox.port)
        # Warm: neither asked again, and no lookup started.
        broker.credentials(workgroup=sandbox.workgroup)
        with broker.connect(workgroup=sandbox.workgroup) as connection:
            assert select_one(connection) == 1
    assert sandbox.rendezvous_result()["met"] is True  # type: ignore[index]
    assert sandbox.calls() == {GET_CREDENTIALS: 1, GET_WORKGROUP: 1}


def test_a_named_secret_and_the_endpoint_are_fetched_side_by_side(sandbox: Sandbox) -> None:
    arn = boto3.client("redshift-serverless").get_namespace(
        namespaceName=sandbox.namespace
    )["namespace"]["adminPasswordSecretArn"]
    sandbox.reset_calls()
    sandbox.rendezvous("secretsmanager.GetSecretValue", "GetWorkgroup")
    with rsauth.Broker() as broker, broker.connect(
        workgroup=sandbox.workgroup, method="secret", secret_id=arn
    ) as connection:
        assert select_one(connection) == 1
    assert sandbox.rendezvous_result()["met"] is True  # type: ignore[index]
    assert sandbox.calls() == {"secretsmanager.GetSecretValue": 1, GET_WORKGROUP: 1}


def test_the_managed_admin_secret_is_found_through_the_workgroup_without_a_second_lookup(
    sandbox: Sandbox,
) -> None:
    # GetNamespace needs the namespace GetWorkgroup names: that chain stays in order, and
    # the endpoint comes from the same GetWorkgroup.
    with rsauth.Broker() as broker, broker.connect(
        workgroup=sandbox.workgroup, method="secret"
    ) as connection:
        assert select_one(connection) == 1
    calls = sandbox.calls()
    assert calls[GET_WORKGROUP] == 1
    assert calls["redshift-serverless.GetNamespace"] == 1
    assert GET_CREDENTIALS not in calls


def test_a_refused_login_is_reported_as_before_and_the_lookup_does_not_outlive_it(
    sandbox: Sandbox,
) -> None:
    sandbox.deny("IAM:sandbox-admin")
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.connect(workgroup=sandbox.workgroup)
    assert "GetCredentials" in str(caught.value)
    assert lookup_threads() == []


def test_a_failed_endpoint_lookup_is_reported_as_before_and_not_asked_again(
    sandbox: Sandbox,
) -> None:
    # Every attempt botocore makes answered with a 500: the first and its 5 retries
    # (botocore/config.py: retries' max_attempts excludes the initial request).
    sandbox.server_error(count=6, operation="GetWorkgroup")
    with rsauth.Broker() as broker:
        with pytest.raises(rsauth.ServiceError) as caught:
            broker.connect(workgroup=sandbox.workgroup)
        assert "GetWorkgroup" in str(caught.value)
        assert sandbox.calls() == {GET_CREDENTIALS: 1, GET_WORKGROUP: 6}
        assert lookup_threads() == []
        # The login was cached meanwhile: the next connect asks only for the endpoint.
        with broker.connect(workgroup=sandbox.workgroup) as connection:
            assert select_one(connection) == 1
    assert sandbox.calls() == {GET_CREDENTIALS: 1, GET_WORKGROUP: 7}


def test_many_cold_callers_still_make_one_call_of_each(sandbox: Sandbox) -> None:
    sandbox.latency(0.2)
    errors: list[BaseException] = []
    with rsauth.Broker() as broker:
        barrier = threading.Barrier(16)

        def worker() -> None:
            barrier.wait()
            try:
                broker.credentials(workgroup=sandbox.workgroup)
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=worker) for _ in range(16)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(120)
    assert errors == []
    assert sandbox.calls() == {GET_CREDENTIALS: 1, GET_WORKGROUP: 1}
    assert lookup_threads() == []


def test_a_fresh_process_loads_only_what_its_first_connect_uses(sandbox: Sandbox) -> None:
    code = (
        "import json, sys, rsauth\n"
        f"lazy = {LAZY_MODULES!r}\n"
        "after_import = [m for m in lazy if m in sys.modules]\n"
        f"connection = rsauth.connect(workgroup={sandbox.workgroup!r})\n"
        "connection.cursor().execute('select 1')\n"
        "connection.close()\n"
        "print(json.dumps([after_import, [m for m in lazy if m in sys.modules]]))\n"
    )
    src = str(Path(rsauth.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": src},
    )
    after_import, after_connect = json.loads(result.stdout)
    assert after_import == []
    assert after_connect == []
