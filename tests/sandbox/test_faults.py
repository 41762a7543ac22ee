"""Every fault the sandbox injects, as boto3 and redshift_connector meet it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
import pytest
import redshift_connector
from botocore.config import Config
from redshift_connector.error import InterfaceError, OperationalError

from rsauth.sandbox import Sandbox, SandboxError

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient

WORKGROUP = "default-workgroup"


def serverless(attempts: int = 3, read_timeout: float = 60) -> RedshiftServerlessClient:
    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=read_timeout
    )
    return boto3.client("redshift-serverless", config=config)


def login(sb: Sandbox, user: str, password: str) -> Any:
    return redshift_connector.connect(
        host=sb.host, port=sb.port, database="dev", user=user, password=password,
        ssl=True, sslmode="verify-full", timeout=10,
    )


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response["Error"]["Code"])


# -- control plane ----------------------------------------------------------------------


def test_a_single_throttle_is_absorbed_by_botocores_retries(sandbox: Sandbox) -> None:
    sandbox.throttle(1, operation="GetCredentials")
    answer = serverless().get_credentials(workgroupName=WORKGROUP)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert sandbox.calls()["redshift-serverless.GetCredentials"] == 2


def test_persistent_throttling_reaches_the_client_as_throttling_exception(
    sandbox: Sandbox,
) -> None:
    sandbox.throttle(5)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        serverless(attempts=2).get_workgroup(workgroupName=WORKGROUP)
    assert error_code(caught.value) == "ThrottlingException"
    assert caught.value.response["Error"]["Message"] == "Rate exceeded"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_server_errors_are_500_internal_server_exception(sandbox: Sandbox) -> None:
    client = serverless(attempts=1)
    sandbox.server_error(1)
    with pytest.raises(client.exceptions.InternalServerException):
        client.get_workgroup(workgroupName=WORKGROUP)
    sandbox.server_error(1)
    answer = serverless(attempts=3).get_workgroup(workgroupName=WORKGROUP)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1


def test_faults_reach_other_services_in_their_own_protocol(sandbox: Sandbox) -> None:
    sandbox.throttle(1, operation="sts.GetCallerIdentity")
    sts = boto3.client("sts", config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sts.get_caller_identity()
    assert error_code(caught.value) == "Throttling"
    assert sts.get_caller_identity()["Arn"].endswith(":user/sandbox-admin")


def _outcomes(sb: Sandbox, seed: int) -> list[bool]:
    sb.reset()
    sb.throttle(fraction=0.5, seed=seed)
    client = serverless(attempts=1)
    outcomes = []
    for _ in range(20):
        try:
            client.get_workgroup(workgroupName=WORKGROUP)
            outcomes.append(True)
        except botocore.exceptions.ClientError:
            outcomes.append(False)
    return outcomes


def test_a_seeded_fraction_repeats(sandbox: Sandbox) -> None:
    first = _outcomes(sandbox, seed=7)
    assert True in first
    assert False in first
    assert _outcomes(sandbox, seed=7) == first


def test_latency_delays_the_named_operation(sandbox: Sandbox) -> None:
    sandbox.latency(3.0, operation="GetCredentials")
    impatient = serverless(attempts=1, read_timeout=0.5)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.get_credentials(workgroupName=WORKGROUP)
    # Other operations are not delayed.
    assert impatient.get_workgroup(workgroupName=WORKGROUP)["workgroup"]["status"] == "AVAILABLE"


def test_a_rendezvous_tells_calls_side_by_side_from_calls_in_turn(sandbox: Sandbox) -> None:
    client = serverless()
    # One after the other: the first is held until the guard's timeout, then let go.
    sandbox.rendezvous("GetWorkgroup", "ListWorkgroups", timeout=1)
    client.get_workgroup(workgroupName=WORKGROUP)
    client.list_workgroups()
    assert sandbox.rendezvous_result() == {
        "met": False, "arrived": ["GetWorkgroup", "ListWorkgroups"],
    }
    # Side by side: each waits for the other, then both are answered.
    sandbox.rendezvous("GetWorkgroup", "ListWorkgroups", timeout=60)
    other = threading.Thread(target=client.list_workgroups)
    other.start()
    client.get_workgroup(workgroupName=WORKGROUP)
    other.join(60)
    met = sandbox.rendezvous_result()
    assert met is not None
    assert met["met"] is True
    assert sorted(met["arrived"]) == ["GetWorkgroup", "ListWorkgroups"]
    sandbox.reset()
    assert sandbox.rendezvous_result() is None


def test_denied_identity_gets_access_denied_in_iams_words(sandbox: Sandbox) -> None:
    sandbox.deny("IAM:sandbox-admin")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        serverless().get_credentials(workgroupName=WORKGROUP)
    assert error_code(caught.value) == "AccessDeniedException"
    message = caught.value.response["Error"]["Message"]
    assert re.match(
        r"User: arn:aws:iam::123456789012:user/sandbox-admin is not authorized to perform: "
        r"redshift-serverless:GetCredentials on resource: "
        r"arn:aws:redshift-serverless:us-east-1:123456789012:workgroup/[0-9a-f-]{36}",
        message,
    )
    sandbox.allow("IAM:sandbox-admin")
    assert serverless().get_credentials(workgroupName=WORKGROUP)["dbUser"] == "IAM:sandbox-admin"


def test_an_unavailable_plane_refuses_connections_then_returns(sandbox: Sandbox) -> None:
    sandbox.unavailable(60)
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        serverless(attempts=1).get_workgroup(workgroupName=WORKGROUP)
    sandbox.available()
    assert serverless().get_workgroup(workgroupName=WORKGROUP)["workgroup"]["status"]


def test_an_outage_ends_by_itself(sandbox: Sandbox) -> None:
    sandbox.unavailable(0.5)
    deadline = time.monotonic() + 30
    while True:
        try:
            serverless(attempts=1).get_workgroup(workgroupName=WORKGROUP)
            break
        except botocore.exceptions.EndpointConnectionError:
            assert time.monotonic() < deadline, "the plane did not come back"
            time.sleep(0.1)


def test_workgroup_status_can_be_set(sandbox: Sandbox) -> None:
    sandbox.set_workgroup_status("MODIFYING")
    client = serverless()
    assert client.get_workgroup(workgroupName=WORKGROUP)["workgroup"]["status"] == "MODIFYING"
    assert client.get_credentials(workgroupName=WORKGROUP)["dbUser"], "still serving"
    sandbox.set_workgroup_status("CREATING")
    with pytest.raises(client.exceptions.ValidationException, match="not available"):
        client.get_credentials(workgroupName=WORKGROUP)
    with pytest.raises(SandboxError, match="AVAILABLE"):
        sandbox.set_workgroup_status("BROKEN")


def test_fault_arguments_are_checked(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match="exactly one of count= or fraction="):
        sandbox.throttle()
    with pytest.raises(SandboxError, match="fraction must be between 0 and 1"):
        sandbox.server_error(fraction=2.0)
    with pytest.raises(SandboxError, match="unknown front fault"):
        sandbox.front_fault("explode", 1)


def test_reset_clears_every_fault_and_count(sandbox: Sandbox) -> None:
    sandbox.throttle(fraction=1.0)
    sandbox.deny("IAM:sandbox-admin")
    sandbox.set_workgroup_status("DELETING")
    sandbox.front_fault("refuse", 5)
    sandbox.reset()
    assert sandbox.calls() == {}
    answer = serverless(attempts=1).get_credentials(workgroupName=WORKGROUP)
    with login(sandbox, answer["dbUser"], answer["dbPassword"]) as connection:
        assert connection.cursor().execute("select 1").fetchone()[0] == 1


# -- credentials ------------------------------------------------------------------------


def test_short_lifetimes_and_the_issued_password_list(sandbox: Sandbox) -> None:
    sandbox.set_credential_lifetime(2)
    before = time.time()
    answer = serverless().get_credentials(workgroupName=WORKGROUP, durationSeconds=3600)
    assert answer["expiration"].timestamp() - before < 60
    issued = [entry["password"] for entry in sandbox.issued_passwords()]
    assert answer["dbPassword"] in issued
    sandbox.set_credential_lifetime(None)
    longer = serverless().get_credentials(workgroupName=WORKGROUP, durationSeconds=3600)
    assert longer["expiration"].timestamp() - before > 3000


def test_expiring_everyone_refuses_new_logins(sandbox: Sandbox) -> None:
    answer = serverless().get_credentials(workgroupName=WORKGROUP)
    assert sandbox.expire_passwords() >= 1
    with pytest.raises(InterfaceError) as caught:
        login(sandbox, answer["dbUser"], answer["dbPassword"])
    assert caught.value.args[0]["M"] == "IAM Authentication token has expired"


# -- rotation ---------------------------------------------------------------------------


def _admin_secret(stage: str | None = None) -> dict[str, Any]:
    arn = boto3.client("redshift-serverless").get_namespace(namespaceName="default-namespace")[
        "namespace"
    ]["adminPasswordSecretArn"]
    extra = {"VersionStage": stage} if stage else {}
    answer = boto3.client("secretsmanager").get_secret_value(SecretId=arn, **extra)
    document: dict[str, Any] = json.loads(answer["SecretString"])
    document["VersionId"] = answer["VersionId"]
    return document


def test_a_rotation_window_is_observable(sandbox: Sandbox) -> None:
    old = _admin_secret()
    pending_version = sandbox.begin_rotation()
    try:
        # The database already holds the new password; AWSCURRENT still has the old one.
        assert _admin_secret()["password"] == old["password"]
        pending = _admin_secret("AWSPENDING")
        assert pending["VersionId"] == pending_version
        assert pending["password"] != old["password"]
        with pytest.raises(InterfaceError) as caught:
            login(sandbox, old["username"], old["password"])
        assert caught.value.args[0]["C"] == "28000"
        with login(sandbox, pending["username"], pending["password"]) as connection:
            assert connection.cursor().execute("select current_user").fetchone()[0] == "admin"
    finally:
        sandbox.finish_rotation()
    # After promotion, a read without a stage sees the new version (moto alone would not).
    current = _admin_secret()
    assert current["VersionId"] == pending_version
    assert current["password"] == pending["password"]
    previous = _admin_secret("AWSPREVIOUS")
    assert previous["password"] == old["password"]


def test_rotate_secret_runs_the_whole_rotation(sandbox: Sandbox) -> None:
    old = _admin_secret()
    version = sandbox.rotate_secret(pause=0.1)
    current = _admin_secret()
    assert current["VersionId"] == version
    with login(sandbox, current["username"], current["password"]) as connection:
        assert connection.cursor().execute("select 1").fetchone()[0] == 1
    with pytest.raises(InterfaceError):
        login(sandbox, old["username"], old["password"])
    with pytest.raises(SandboxError, match="no rotation in progress"):
        sandbox.finish_rotation()


# -- wire front -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "stage"),
    [("refuse", "tls"), ("reset_after_accept", "tls"), ("reset_handshake", "ssl_answer"),
     ("reset_handshake", "tls")],
)
def test_front_faults_surface_as_driver_network_errors(
    sandbox: Sandbox, kind: str, stage: str
) -> None:
    answer = serverless().get_credentials(workgroupName=WORKGROUP)
    sandbox.front_fault(kind, 1, stage=stage)
    with pytest.raises((InterfaceError, OperationalError, OSError)):
        login(sandbox, answer["dbUser"], answer["dbPassword"])
    # Only the next connection was hit.
    with login(sandbox, answer["dbUser"], answer["dbPassword"]) as connection:
        assert connection.cursor().execute("select 1").fetchone()[0] == 1
    assert sandbox.front_stats()["injected"][kind] == 1


def test_front_delay_trips_the_drivers_timeout(sandbox: Sandbox) -> None:
    answer = serverless().get_credentials(workgroupName=WORKGROUP)
    sandbox.front_fault("delay", 1, seconds=5)
    with pytest.raises((InterfaceError, OperationalError, OSError)):
        redshift_connector.connect(
            host=sandbox.host, port=sandbox.port, database="dev", user=answer["dbUser"],
            password=answer["dbPassword"], ssl=True, sslmode="verify-full", timeout=1,
        )


# -- foreground mode's admin API --------------------------------------------------------


def _post(url: str, **body: Any) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the sandbox's loopback admin API
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        return json.loads(response.read())["result"]


def test_foreground_admin_api_does_what_the_methods_do(monkeypatch: pytest.MonkeyPatch) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rsauth.sandbox"], stdout=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        for line in lines:
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                monkeypatch.setenv(key, value.strip("'"))
        # boto3's default session keeps the keys it first read: those of another sandbox.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        admin = re.search(r"admin API: (http://127\.0\.0\.1:\d+/[\w-]+)", "".join(lines))
        assert admin is not None
        _post(f"{admin.group(1)}/throttle", count=1, operation="GetWorkgroup")
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            serverless(attempts=1).get_workgroup(workgroupName=WORKGROUP)
        assert error_code(caught.value) == "ThrottlingException"
        assert _post(f"{admin.group(1)}/calls") == {"redshift-serverless.GetWorkgroup": 1}
        _post(f"{admin.group(1)}/set_idle_resume", seconds=5, idle_after=120)
        idle = _post(f"{admin.group(1)}/front_stats")["idle"]
        assert (idle["seconds"], idle["idle_after"], idle["state"]) == (5, 120, "awake")
        _post(f"{admin.group(1)}/reset")
        assert _post(f"{admin.group(1)}/calls") == {}
        assert _post(f"{admin.group(1)}/front_stats")["idle"]["state"] == "off"
    finally:
        process.terminate()
        process.wait(60)
        process.stdout.close()
