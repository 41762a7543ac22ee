"""The README's minimal IAM policy for each method is enough, and nothing less is.

Each identity here is made through the IAM API with exactly the README's
policy, and the sandbox evaluates it as AWS does (docs/sandbox.md). Actions and
resources per the Redshift Serverless and Secrets Manager service
authorization references
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonredshiftserverless.html,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecretsmanager.html).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from tests._iam import ACCOUNT, LOGIN_ACTIONS, allow, make_role, make_user

import rsauth
from rsauth.sandbox import Sandbox


def _arn(kind: str, name: str) -> str:
    plane = boto3.client("redshift-serverless")
    if kind == "workgroup":
        return str(plane.get_workgroup(workgroupName=name)["workgroup"]["workgroupArn"])
    return str(plane.get_namespace(namespaceName=name)["namespace"]["namespaceArn"])


@pytest.fixture
def as_user(sandbox: Sandbox) -> Iterator[list[rsauth.Broker]]:
    made: list[rsauth.Broker] = []
    yield made
    for broker in made:
        broker.close()


def broker_for(made: list[rsauth.Broker], keys: dict[str, str]) -> rsauth.Broker:
    broker = rsauth.Broker(session=boto3.session.Session(**keys))  # type: ignore[arg-type]
    made.append(broker)
    return broker


def test_iam_needs_get_workgroup_and_get_credentials_on_the_workgroup(
    sandbox: Sandbox, as_user: list[rsauth.Broker]
) -> None:
    workgroup = _arn("workgroup", sandbox.workgroup)
    name = f"minimal-iam-{uuid.uuid4().hex[:6]}"
    keys = make_user(name, allow(LOGIN_ACTIONS, workgroup))
    with broker_for(as_user, keys).connect(workgroup=sandbox.workgroup) as connection:
        cursor = connection.cursor()
        cursor.execute("select current_user")
        assert cursor.fetchone() == [f"IAM:{name}"]
    lacking = make_user(f"minimal-less-{uuid.uuid4().hex[:6]}",
                        allow("redshift-serverless:GetWorkgroup", workgroup))
    with pytest.raises(rsauth.AccessDeniedError):
        broker_for(as_user, lacking).credentials(workgroup=sandbox.workgroup)


def test_iam_with_a_role_needs_assume_and_tag_on_the_role(
    sandbox: Sandbox, as_user: list[rsauth.Broker]
) -> None:
    sandbox.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reporting') "
        "THEN CREATE ROLE reporting; END IF; END $$"
    )
    role = make_role("minimal-role", allow(LOGIN_ACTIONS, _arn("workgroup", sandbox.workgroup)))
    keys = make_user(
        f"minimal-assumer-{uuid.uuid4().hex[:6]}", allow(["sts:AssumeRole", "sts:TagSession"], role)
    )
    broker = broker_for(as_user, keys)
    credentials = broker.credentials(
        workgroup=sandbox.workgroup, role_arn=role, db_roles=["reporting"]
    )
    assert credentials.user == "IAMR:minimal-role"
    only_assume = make_user(
        f"minimal-notag-{uuid.uuid4().hex[:6]}", allow("sts:AssumeRole", role)
    )
    with pytest.raises(rsauth.AccessDeniedError):
        broker_for(as_user, only_assume).credentials(
            workgroup=sandbox.workgroup, role_arn=role, db_roles=["reporting"]
        )


def test_secret_needs_the_workgroup_the_namespace_and_the_admin_secret(
    sandbox: Sandbox, as_user: list[rsauth.Broker]
) -> None:
    keys = make_user(
        f"minimal-secret-{uuid.uuid4().hex[:6]}",
        allow(
            ["redshift-serverless:GetWorkgroup", "redshift-serverless:GetNamespace"],
            [_arn("workgroup", sandbox.workgroup), _arn("namespace", sandbox.namespace)],
        ),
        allow(
            "secretsmanager:GetSecretValue",
            f"arn:aws:secretsmanager:{sandbox.region}:{ACCOUNT}:secret:"
            f"redshift!{sandbox.namespace}-admin-*",
        ),
    )
    credentials = broker_for(as_user, keys).credentials(
        workgroup=sandbox.workgroup, method="secret"
    )
    assert credentials.user == "admin"
