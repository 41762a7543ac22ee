"""rsauth's broker against the sandbox: every method, the cache, refresh and recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from tests._iam import make_role

import rsauth
from rsauth.sandbox import Sandbox

ACCOUNT = "123456789012"


def scalar(connection: Any, sql: str) -> Any:
    cursor = connection.cursor()
    cursor.execute(sql)
    row = cursor.fetchone()
    cursor.close()
    return row[0]


def whoami(connection: Any) -> tuple[str, bool]:
    cursor = connection.cursor()
    cursor.execute("select current_user, usesuper from pg_user where usename = current_user")
    user, superuser = cursor.fetchone()
    cursor.close()
    return str(user), bool(superuser)


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


def aws_calls(sb: Sandbox, operation: str) -> int:
    return sb.calls().get(operation, 0)


# -- each method logs in as the right user -------------------------------------------------


def test_iam_logs_in_as_the_callers_iam_user(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    with broker.connect(workgroup=sandbox.workgroup) as connection:
        assert whoami(connection) == ("IAM:sandbox-admin", True)
    credentials = broker.credentials(workgroup=sandbox.workgroup)
    assert credentials.method == "iam"
    assert credentials.user == "IAM:sandbox-admin"
    assert credentials.database == "dev"
    assert credentials.host == "localhost"
    assert credentials.port == sandbox.port
    assert credentials.expires_in is not None
    assert 0 < credentials.expires_in <= 900


def test_iam_with_role_arn_logs_in_as_the_role(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    role = make_role("analytics-app")
    with broker.connect(workgroup=sandbox.workgroup, role_arn=role) as connection:
        assert whoami(connection) == ("IAMR:analytics-app", False)
    assert aws_calls(sandbox, "sts.AssumeRole") == 1


def test_db_roles_are_granted_through_the_session_tag(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    sandbox.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting') "
        "THEN CREATE ROLE reporting; END IF; END $$"
    )
    role = make_role("tagged-app")
    with broker.connect(
        workgroup=sandbox.workgroup, role_arn=role, db_roles=["reporting"]
    ) as connection:
        assert scalar(connection, "select pg_has_role(current_user, 'reporting', 'member')")


def test_secret_logs_in_as_the_admin(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    with broker.connect(workgroup=sandbox.workgroup, method="secret") as connection:
        assert whoami(connection) == ("admin", True)
    credentials = broker.credentials(workgroup=sandbox.workgroup, method="secret")
    assert credentials.method == "secret"
    assert credentials.expires_at is None


def test_secret_id_picks_the_secret_method(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    name = "app/reporting-login"
    document = {"username": "admin", "password": _admin_password()}
    secrets = boto3.client("secretsmanager")
    try:
        secrets.create_secret(Name=name, SecretString=json.dumps(document))
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=name, SecretString=json.dumps(document))
    with broker.connect(workgroup=sandbox.workgroup, secret_id=name) as connection:
        assert whoami(connection)[0] == "admin"
    assert broker.credentials(workgroup=sandbox.workgroup, secret_id=name).method == "secret"


def _admin_password() -> str:
    arn = boto3.client("redshift-serverless").get_namespace(namespaceName="default-namespace")[
        "namespace"
    ]["adminPasswordSecretArn"]
    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return str(json.loads(value)["password"])


def test_superuser_checks_usesuper(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    with broker.connect(workgroup=sandbox.workgroup, method="superuser") as connection:
        assert whoami(connection) == ("IAM:sandbox-admin", True)
    assert broker.credentials(workgroup=sandbox.workgroup, method="superuser").method == (
        "superuser"
    )


def test_superuser_fails_closed_for_an_ordinary_role(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    role = make_role("not-an-admin")
    with pytest.raises(rsauth.NotSuperuserError, match="IAMR:not-an-admin"):
        broker.connect(workgroup=sandbox.workgroup, method="superuser", role_arn=role)
    # rsauth closed it; the server ends the session a moment after the Terminate message.
    deadline = time.monotonic() + 10
    while True:
        sessions = sandbox.sql(
            "select count(*) from pg_stat_activity where usename = 'IAMR:not-an-admin'"
        )
        if sessions == [["0"]] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sessions == [["0"]], "the refused connection must be closed"


def test_password_method_with_explicit_login(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    with broker.connect(
        workgroup=sandbox.workgroup, user="admin", password=_admin_password()
    ) as connection:
        assert whoami(connection)[0] == "admin"
    assert broker.credentials(
        workgroup=sandbox.workgroup, user="admin", password="not-checked-here"
    ).method == "password"


def test_module_level_functions_read_the_environment(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSAUTH_WORKGROUP", sandbox.workgroup)
    with rsauth.connect() as connection:
        assert whoami(connection)[0] == "IAM:sandbox-admin"
    assert rsauth.get_credentials().workgroup == sandbox.workgroup
    monkeypatch.setenv("RSAUTH_METHOD", "secret")
    assert rsauth.get_credentials().user == "admin"


# -- the cache ---------------------------------------------------------------------------


def test_a_thousand_connects_cost_one_get_credentials(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    for _ in range(1000):
        connection = broker.connect(workgroup=sandbox.workgroup)
        connection.close()
    calls = sandbox.calls()
    assert calls["redshift-serverless.GetCredentials"] == 1
    assert calls["redshift-serverless.GetWorkgroup"] == 1
    stats = broker.stats()
    assert stats["cache.misses"] == 1
    assert stats["cache.hits"] >= 999


@pytest.mark.parametrize("latency", [0.3, 2.0])
def test_a_cold_stampede_makes_one_call(sandbox: Sandbox, latency: float) -> None:
    sandbox.latency(latency)
    failures: list[BaseException] = []
    users: list[str] = []
    start = threading.Barrier(32)

    with rsauth.Broker() as broker:

        def worker() -> None:
            try:
                start.wait()
                with broker.connect(workgroup=sandbox.workgroup) as connection:
                    users.append(whoami(connection)[0])
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not failures
    assert users == ["IAM:sandbox-admin"] * 32
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 1


# -- refresh and recovery -------------------------------------------------------------------


def test_expired_passwords_are_replaced_transparently(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    broker.connect(workgroup=sandbox.workgroup).close()
    sandbox.expire_passwords()
    with broker.connect(workgroup=sandbox.workgroup) as connection:
        assert whoami(connection)[0] == "IAM:sandbox-admin"
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2
    assert broker.stats()["login.retries"] == 1


def test_a_rotation_in_progress_does_not_fail_connects(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    broker.connect(workgroup=sandbox.workgroup, method="secret").close()
    sandbox.begin_rotation()
    try:
        # The database holds the AWSPENDING password; AWSCURRENT still has the old one.
        with broker.connect(workgroup=sandbox.workgroup, method="secret") as connection:
            assert whoami(connection)[0] == "admin"
    finally:
        sandbox.finish_rotation()
    with broker.connect(workgroup=sandbox.workgroup, method="secret") as connection:
        assert whoami(connection)[0] == "admin"


def test_a_throttled_burst_is_absorbed(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    sandbox.throttle(2)
    with broker.connect(workgroup=sandbox.workgroup) as connection:
        assert whoami(connection)[0] == "IAM:sandbox-admin"


def test_a_refused_front_connection_is_retried(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    broker.connect(workgroup=sandbox.workgroup).close()
    sandbox.front_fault("reset_after_accept", 1)
    with broker.connect(workgroup=sandbox.workgroup) as connection:
        assert whoami(connection)[0] == "IAM:sandbox-admin"


# -- errors -------------------------------------------------------------------------------


def test_a_denied_identity_names_identity_and_workgroup(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    sandbox.deny("IAM:sandbox-admin")
    with pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.connect(workgroup=sandbox.workgroup)
    message = str(caught.value)
    assert "sandbox-admin" in message
    assert sandbox.workgroup in message


def test_an_unknown_workgroup_is_not_found_with_its_region(
    sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    with pytest.raises(rsauth.NotFoundError) as caught:
        broker.connect(workgroup="no-such-workgroup")
    assert "no-such-workgroup" in str(caught.value)
    assert "us-east-1" in str(caught.value)


@pytest.mark.parametrize("status", ["CREATING", "DELETING"])
def test_a_workgroup_that_is_not_available_is_a_service_error(
    sandbox: Sandbox, broker: rsauth.Broker, status: str
) -> None:
    sandbox.set_workgroup_status(status)
    with pytest.raises(rsauth.ServiceError, match=f"{status}, not AVAILABLE"):
        broker.connect(workgroup=sandbox.workgroup)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"workgroup": "Not_Valid"}, "workgroup"),
        ({"workgroup": "default-workgroup", "duration": 60}, "duration"),
        ({"workgroup": "default-workgroup", "role_arn": "not-an-arn"}, "role_arn"),
        ({"workgroup": "default-workgroup", "method": "kerberos"}, "method"),
        ({"workgroup": "default-workgroup", "timout": 5}, "timout"),
    ],
)
def test_bad_input_fails_before_any_aws_call(
    sandbox: Sandbox, broker: rsauth.Broker, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(rsauth.ConfigurationError, match=field):
        broker.connect(**arguments)
    assert sandbox.calls() == {}


def test_no_password_in_reprs_or_errors(sandbox: Sandbox, broker: rsauth.Broker) -> None:
    credentials = broker.credentials(workgroup=sandbox.workgroup)
    assert credentials.password not in repr(credentials)
    assert credentials.password not in str(credentials)
    assert credentials.password not in str(credentials.as_dict())
    assert credentials.password not in credentials.sqlalchemy_url()
    assert credentials.as_dict(include_password=True)["password"] == credentials.password


FORK_SCRIPT = """
import os, sys
import rsauth

broker = rsauth.Broker()
with broker.connect(workgroup="default-workgroup") as connection:
    pass
pid = os.fork()
if pid == 0:
    try:
        fresh = broker.stats()
        with broker.connect(workgroup="default-workgroup") as connection:
            cursor = connection.cursor()
            cursor.execute("select current_user")
            user = cursor.fetchone()[0]
        ok = fresh.get("cache.hits", 0) == 0 and user == "IAM:sandbox-admin"
        os._exit(0 if ok else 3)
    except BaseException:
        os._exit(4)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), broker.stats()["cache.misses"])
"""


def test_a_forked_child_starts_empty_and_works(sandbox: Sandbox) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120,
        check=True,
    ).stdout.split()
    assert out == ["0", "1"], "the child must start with an empty cache and log in itself"
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2
