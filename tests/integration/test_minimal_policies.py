"""The documented minimal IAM policy for each method is enough, and nothing less is.

Each identity here is made through the sandbox's IAM API with exactly the policy
``rsauth._policies`` renders (docs/login-methods.md shows the same, checked by
tests/test_docs.py), and the sandbox evaluates it as AWS does (docs/sandbox.md).
Then each action is taken out in turn: the same call must fail with an
``AccessDeniedError`` that names the missing action.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from tests._iam import ACCOUNT, make_user
from tests.resolve import resolve_to_loopback

import rsauth
from rsauth._policies import Target, assume_role_policy, login_policy, trust_policy
from rsauth.sandbox import Sandbox

Call = Callable[[rsauth.Broker], object]
ACCOUNT_ROOT = f"arn:aws:iam::{ACCOUNT}:root"
CERTIFICATE = f"arn:aws:acm:us-west-2:{ACCOUNT}:certificate/11111111-2222-4333-8444-555555555555"


def target_of(workgroup: str, region: str) -> Target:
    plane = boto3.client("redshift-serverless", region_name=region)
    found = plane.get_workgroup(workgroupName=workgroup)["workgroup"]
    namespace = plane.get_namespace(namespaceName=found["namespaceName"])["namespace"]
    return Target(
        region=region,
        account=ACCOUNT,
        workgroup_id=found["workgroupId"],
        namespace_id=namespace["namespaceId"],
        namespace=namespace["namespaceName"],
    )


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """``policy`` with one action taken out (a statement left with none goes)."""
    smaller = copy.deepcopy(policy)
    statements = []
    for statement in smaller["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]
        ]
        kept = [a for a in actions if a != action]
        if kept:
            statement["Action"] = kept
            statements.append(statement)
    smaller["Statement"] = statements
    return smaller


def actions_of(policy: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for statement in policy["Statement"]:
        action = statement["Action"]
        found.extend(action if isinstance(action, list) else [action])
    return found


class Identities:
    """Users made for one test, and brokers signed as them; closed afterwards."""

    def __init__(self) -> None:
        self.brokers: list[rsauth.Broker] = []

    def user(self, policy: dict[str, Any] | None) -> tuple[str, dict[str, str]]:
        name = f"least-{uuid.uuid4().hex[:10]}"
        keys = make_user(name, *(policy["Statement"] if policy else ()))
        return f"arn:aws:iam::{ACCOUNT}:user/{name}", keys

    def broker(self, keys: dict[str, str]) -> rsauth.Broker:
        broker = rsauth.Broker(session=boto3.session.Session(**keys))  # type: ignore[arg-type]
        self.brokers.append(broker)
        return broker


@pytest.fixture
def identities(sandbox: Sandbox) -> Iterator[Identities]:
    made = Identities()
    yield made
    for broker in made.brokers:
        broker.close()


def assert_exactly_enough(identities: Identities, policy: dict[str, Any], call: Call) -> None:
    _, keys = identities.user(policy)
    call(identities.broker(keys))
    for action in actions_of(policy):
        _, keys = identities.user(without(policy, action))
        with pytest.raises(rsauth.AccessDeniedError) as refused:
            call(identities.broker(keys))
        assert action in str(refused.value), f"the refusal names {action}"


def test_iam(sandbox: Sandbox, identities: Identities) -> None:
    policy = login_policy("iam", target_of(sandbox.workgroup, sandbox.region))

    def log_in(broker: rsauth.Broker) -> None:
        broker.connect(workgroup=sandbox.workgroup).close()

    assert_exactly_enough(identities, policy, log_in)


def test_secret(sandbox: Sandbox, identities: Identities) -> None:
    policy = login_policy("secret", target_of(sandbox.workgroup, sandbox.region))

    def log_in(broker: rsauth.Broker) -> None:
        broker.connect(workgroup=sandbox.workgroup, method="secret").close()

    assert_exactly_enough(identities, policy, log_in)


def test_secret_id(sandbox: Sandbox, identities: Identities) -> None:
    target = target_of(sandbox.workgroup, sandbox.region)
    plane = boto3.client("redshift-serverless")
    secret_arn = plane.get_namespace(namespaceName=sandbox.namespace)["namespace"][
        "adminPasswordSecretArn"
    ]
    policy = login_policy("secret", target, secret_arn=secret_arn)

    def log_in(broker: rsauth.Broker) -> None:
        broker.connect(workgroup=sandbox.workgroup, secret_id=secret_arn).close()

    assert_exactly_enough(identities, policy, log_in)


def test_etl_role_check(sandbox: Sandbox, identities: Identities) -> None:
    policy = login_policy("iam", target_of(sandbox.workgroup, sandbox.region), etl=True)

    def check(broker: rsauth.Broker) -> None:
        broker.connect(workgroup=sandbox.workgroup).close()
        broker.namespace_roles(workgroup=sandbox.workgroup)

    assert_exactly_enough(identities, policy, check)


def test_custom_domain(
    sandbox: Sandbox, identities: Identities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    client = boto3.client("redshift-serverless", region_name="us-west-2")
    suffix = uuid.uuid4().hex[:8]
    client.create_namespace(namespaceName=f"least-ns-{suffix}", dbName="dev")
    client.create_workgroup(workgroupName=f"least-{suffix}", namespaceName=f"least-ns-{suffix}")
    domain = f"least-{suffix}.example.com"
    client.create_custom_domain_association(
        workgroupName=f"least-{suffix}", customDomainName=domain,
        customDomainCertificateArn=CERTIFICATE,
    )
    resolve_to_loopback(monkeypatch, domain)
    policy = login_policy("iam", target_of(f"least-{suffix}", "us-west-2"), custom_domain=True)

    def log_in(broker: rsauth.Broker) -> None:
        broker.connect(custom_domain=domain, timeout=10).close()

    assert_exactly_enough(identities, policy, log_in)


def test_a_role_with_database_roles(sandbox: Sandbox, identities: Identities) -> None:
    """The caller needs AssumeRole and TagSession on the role; the role, the login policy."""
    sandbox.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'least_reader') "
        "THEN CREATE ROLE least_reader; END IF; END $$"
    )
    role_name = f"least-role-{uuid.uuid4().hex[:8]}"
    role = f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
    caller_policy = assume_role_policy(role, db_roles=True)
    callers = [identities.user(caller_policy)]
    callers += [identities.user(without(caller_policy, a)) for a in actions_of(caller_policy)]
    # Trusting the account hands the decision to the callers' own policies; a trust that
    # named a caller's ARN would let it in without one, within an account
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-basics.html).
    iam = boto3.client("iam")
    iam.create_role(
        RoleName=role_name,
        AssumeRolePolicyDocument=json.dumps(trust_policy(ACCOUNT_ROOT, db_roles=True)),
    )
    target = target_of(sandbox.workgroup, sandbox.region)
    iam.put_role_policy(
        RoleName=role_name,
        PolicyName="login",
        PolicyDocument=json.dumps(login_policy("iam", target)),
    )

    def log_in(broker: rsauth.Broker) -> str:
        with broker.connect(
            workgroup=sandbox.workgroup, role_arn=role, db_roles=["least_reader"]
        ) as connection:
            cursor = connection.cursor()
            cursor.execute("select current_user")
            row = cursor.fetchone()
            assert row is not None
            return str(row[0])

    (_, keys), *lacking = callers
    assert log_in(identities.broker(keys)) == f"IAMR:{role_name}"
    for action, (_, keys) in zip(actions_of(caller_policy), lacking, strict=True):
        with pytest.raises(rsauth.AccessDeniedError) as refused:
            log_in(identities.broker(keys))
        assert action in str(refused.value), f"the refusal names {action}"
