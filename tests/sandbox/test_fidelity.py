"""The sandbox behaves as Redshift Serverless does, seen through boto3 and redshift_connector.

These tests do not use rsauth's broker: they check the stand-in itself.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import redshift_connector
from redshift_connector.error import InterfaceError
from tests._iam import make_role

from rsauth.sandbox import Sandbox

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient


def serverless(**keys: str) -> RedshiftServerlessClient:
    return boto3.client("redshift-serverless", **keys)  # type: ignore[call-overload, no-any-return]


def login(
    sb: Sandbox, user: str, password: str, database: str = "dev", port: int | None = None
) -> Any:
    return redshift_connector.connect(
        host=sb.host,
        port=port or sb.port,
        database=database,
        user=user,
        password=password,
        ssl=True,
        sslmode="verify-full",
        timeout=30,
    )


def scalar(connection: Any, sql: str) -> Any:
    cursor = connection.cursor()
    cursor.execute(sql)
    row = cursor.fetchone()
    cursor.close()
    return row[0]


def assumed_role_keys(role: str, tags: dict[str, str] | None = None) -> dict[str, str]:
    make_role(role)
    extra: dict[str, Any] = {}
    if tags:
        extra["Tags"] = [{"Key": key, "Value": value} for key, value in tags.items()]
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::123456789012:role/{role}", RoleSessionName="fidelity-test", **extra
    )["Credentials"]
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


def test_environment_points_every_client_at_the_sandbox(sandbox: Sandbox) -> None:
    env = sandbox.env
    for service in ("REDSHIFT_SERVERLESS", "STS", "IAM", "SECRETS_MANAGER", "S3"):
        assert env[f"AWS_ENDPOINT_URL_{service}"].startswith("http://127.0.0.1:")
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["SSL_CERT_FILE"].endswith(".pem")
    env["AWS_REGION"] = "changed"
    assert sandbox.env["AWS_REGION"] == "us-east-1", "env must be a fresh dict each time"


def test_default_account_is_set_up_like_a_new_one(sandbox: Sandbox) -> None:
    client = serverless()
    workgroup = client.get_workgroup(workgroupName="default-workgroup")["workgroup"]
    assert workgroup["status"] == "AVAILABLE"
    assert workgroup["namespaceName"] == "default-namespace"
    assert workgroup["endpoint"]["address"] == "localhost"
    assert workgroup["endpoint"]["port"] == sandbox.port
    assert workgroup["workgroupArn"].startswith(
        "arn:aws:redshift-serverless:us-east-1:123456789012:workgroup/"
    )
    namespace = client.get_namespace(namespaceName="default-namespace")["namespace"]
    assert namespace["dbName"] == "dev"
    assert namespace["adminUsername"] == "admin"
    assert "defaultIamRoleArn" not in namespace
    assert namespace["adminPasswordSecretArn"].startswith(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:redshift!default-namespace-admin-"
    )
    names = [w["workgroupName"] for w in client.list_workgroups()["workgroups"]]
    assert names == ["default-workgroup"]
    assert [n["namespaceName"] for n in client.list_namespaces()["namespaces"]] == [
        "default-namespace"
    ]


def test_get_credentials_logs_in_as_the_iam_user(sandbox: Sandbox) -> None:
    answer = serverless().get_credentials(
        workgroupName="default-workgroup", dbName="dev", durationSeconds=900
    )
    assert answer["dbUser"] == "IAM:sandbox-admin"
    lifetime = (answer["expiration"] - answer["nextRefreshTime"]).total_seconds()
    assert lifetime == 0
    with login(sandbox, answer["dbUser"], answer["dbPassword"]) as connection:
        assert scalar(connection, "select current_user") == "IAM:sandbox-admin"
        # The identity that created the namespace is a superuser.
        assert scalar(connection, "select usesuper from pg_user where usename = current_user")
        assert connection._server_version is not None


def test_assumed_role_logs_in_as_iamr_role(sandbox: Sandbox) -> None:
    keys = assumed_role_keys("analytics-reader")
    answer = serverless(**keys).get_credentials(workgroupName="default-workgroup")
    assert answer["dbUser"] == "IAMR:analytics-reader"
    with login(sandbox, answer["dbUser"], answer["dbPassword"]) as connection:
        assert scalar(connection, "select current_user") == "IAMR:analytics-reader"
        superuser = scalar(connection, "select usesuper from pg_user where usename = current_user")
        assert superuser is False


def test_two_overlapping_passwords_both_log_in(sandbox: Sandbox) -> None:
    client = serverless()
    first = client.get_credentials(workgroupName="default-workgroup")
    second = client.get_credentials(workgroupName="default-workgroup")
    assert first["dbPassword"] != second["dbPassword"]
    for answer in (first, second, first):
        with login(sandbox, answer["dbUser"], answer["dbPassword"]) as connection:
            assert scalar(connection, "select 1") == 1


def _refusal(sb: Sandbox, user: str, password: str) -> dict[str, str]:
    with pytest.raises(InterfaceError) as caught:
        login(sb, user, password)
    detail = caught.value.args[0]
    assert isinstance(detail, dict)
    return detail


def test_wrong_password_is_refused_with_redshifts_answer(sandbox: Sandbox) -> None:
    answer = serverless().get_credentials(workgroupName="default-workgroup")
    detail = _refusal(sandbox, answer["dbUser"], answer["dbPassword"] + "x")
    assert detail["C"] == "28000"
    assert detail["S"] == "FATAL"
    assert detail["M"] == 'password authentication failed for user "IAM:sandbox-admin"'


def test_expired_password_is_refused_but_open_sessions_stay(sandbox: Sandbox) -> None:
    keys = assumed_role_keys("expiry-check")
    answer = serverless(**keys).get_credentials(workgroupName="default-workgroup")
    open_session = login(sandbox, answer["dbUser"], answer["dbPassword"])
    try:
        assert sandbox.expire_passwords("IAMR:expiry-check") >= 1
        detail = _refusal(sandbox, answer["dbUser"], answer["dbPassword"])
        assert detail["C"] == "28000"
        assert detail["M"] == "IAM Authentication token has expired"
        assert scalar(open_session, "select current_user") == "IAMR:expiry-check"
    finally:
        open_session.close()


@pytest.mark.parametrize("duration", [899, 3601, 0])
def test_duration_outside_900_to_3600_is_a_validation_error(
    sandbox: Sandbox, duration: int
) -> None:
    client = serverless()
    with pytest.raises(client.exceptions.ValidationException, match="durationSeconds"):
        client.get_credentials(workgroupName="default-workgroup", durationSeconds=duration)


@pytest.mark.parametrize("name", ["Default-Workgroup", "under_score", "a" * 65])
def test_malformed_workgroup_is_a_validation_error(sandbox: Sandbox, name: str) -> None:
    client = serverless()
    with pytest.raises(client.exceptions.ValidationException, match="workgroupName"):
        client.get_credentials(workgroupName=name)


def test_unknown_workgroup_and_namespace_are_not_found(sandbox: Sandbox) -> None:
    client = serverless()
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="no-such-wg"):
        client.get_credentials(workgroupName="no-such-wg")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="no-such-wg"):
        client.get_workgroup(workgroupName="no-such-wg")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="no-such-ns"):
        client.get_namespace(namespaceName="no-such-ns")


def test_error_answers_carry_aws_json_headers(sandbox: Sandbox) -> None:
    client = serverless()
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.get_workgroup(workgroupName="no-such-wg")
    metadata = caught.value.response["ResponseMetadata"]
    assert metadata["HTTPStatusCode"] == 400
    assert metadata["HTTPHeaders"]["x-amzn-errortype"] == "ResourceNotFoundException"
    assert metadata["RequestId"]


def test_unknown_access_key_is_refused(sandbox: Sandbox) -> None:
    client = serverless(aws_access_key_id="AKIAUNKNOWNKEY000000", aws_secret_access_key="x")
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.get_credentials(workgroupName="default-workgroup")
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_managed_admin_secret_logs_in_as_superuser(sandbox: Sandbox) -> None:
    namespace = serverless().get_namespace(namespaceName="default-namespace")["namespace"]
    secret = boto3.client("secretsmanager").get_secret_value(
        SecretId=namespace["adminPasswordSecretArn"]
    )
    document = json.loads(secret["SecretString"])
    assert document["username"] == "admin"
    with login(sandbox, document["username"], document["password"]) as connection:
        assert scalar(connection, "select current_user") == "admin"
        assert scalar(connection, "select usesuper from pg_user where usename = current_user")


def test_redshift_db_roles_tag_grants_existing_roles(sandbox: Sandbox) -> None:
    sandbox.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analyst') "
        "THEN CREATE ROLE analyst; END IF; END $$"
    )
    keys = assumed_role_keys("tagged-role", {"RedshiftDbRoles": "analyst:missing_role"})
    answer = serverless(**keys).get_credentials(workgroupName="default-workgroup")
    with login(sandbox, answer["dbUser"], answer["dbPassword"]) as connection:
        assert scalar(connection, "select pg_has_role(current_user, 'analyst', 'member')")
    untagged = serverless(**assumed_role_keys("untagged-role")).get_credentials(
        workgroupName="default-workgroup"
    )
    with login(sandbox, untagged["dbUser"], untagged["dbPassword"]) as connection:
        assert not scalar(connection, "select pg_has_role(current_user, 'analyst', 'member')")


def test_calls_are_counted_per_operation_and_resettable(sandbox: Sandbox) -> None:
    client = serverless()
    client.get_workgroup(workgroupName="default-workgroup")
    client.get_credentials(workgroupName="default-workgroup")
    client.get_credentials(workgroupName="default-workgroup")
    calls = sandbox.calls()
    assert calls["redshift-serverless.GetWorkgroup"] == 1
    assert calls["redshift-serverless.GetCredentials"] == 2
    sandbox.reset_calls()
    assert sandbox.calls() == {}


def test_create_namespace_and_workgroup(sandbox: Sandbox) -> None:
    client = serverless()
    client.create_namespace(namespaceName="reporting-ns", dbName="reporting",
                            adminUsername="reporter", manageAdminPassword=True)
    created = client.create_workgroup(workgroupName="reporting", namespaceName="reporting-ns")
    assert created["workgroup"]["status"] == "AVAILABLE"
    with pytest.raises(client.exceptions.ValidationException, match="manageAdminPassword"):
        client.create_namespace(namespaceName="bad-ns", adminUserPassword="Secret123",
                                manageAdminPassword=True)
    with pytest.raises(client.exceptions.ValidationException, match="default IAM role"):
        client.create_namespace(namespaceName="bad-ns2",
                                defaultIamRoleArn="arn:aws:iam::123456789012:role/x")
    answer = client.get_credentials(workgroupName="reporting", dbName="reporting")
    # On the workgroup's own port: its passwords are not valid on another workgroup's.
    port = created["workgroup"]["endpoint"]["port"]
    with login(sandbox, answer["dbUser"], answer["dbPassword"], "reporting", port) as conn:
        assert scalar(conn, "select current_database()") == "reporting"
    roles = ["arn:aws:iam::123456789012:role/loader"]
    updated = client.update_namespace(namespaceName="reporting-ns", iamRoles=roles,
                                      defaultIamRoleArn=roles[0])["namespace"]
    assert updated["defaultIamRoleArn"] == roles[0]
    page = client.list_workgroups(maxResults=1)
    assert len(page["workgroups"]) == 1
    assert "nextToken" in page


def test_put_secret_value_moves_awscurrent_after_a_rotation(sandbox: Sandbox) -> None:
    # PutSecretValue without VersionStages: "Secrets Manager automatically moves the staging
    # label AWSCURRENT to this version", and AWSPREVIOUS to the version that had it
    # (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html).
    # moto leaves AWSCURRENT on two versions once UpdateSecretVersionStage has run.
    client = boto3.client("secretsmanager")
    name = f"rotated-then-put-{uuid.uuid4().hex[:8]}"
    arn = client.create_secret(Name=name, SecretString='{"username": "u", "password": "one"}')[
        "ARN"
    ]
    sandbox.rotate_secret(arn)
    put = client.put_secret_value(
        SecretId=arn, SecretString='{"username": "u", "password": "three"}'
    )
    stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = [version for version, labels in stages.items() if "AWSCURRENT" in labels]
    previous = [version for version, labels in stages.items() if "AWSPREVIOUS" in labels]
    assert current == [put["VersionId"]]
    assert len(previous) == 1
    assert previous != current
    assert json.loads(client.get_secret_value(SecretId=arn)["SecretString"]) == {
        "username": "u", "password": "three"
    }
