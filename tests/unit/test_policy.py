"""The sandbox's IAM policy evaluation, as pure logic.

Sources: "Policy evaluation logic"
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html)
and the Action, Resource, NotResource and Principal element references
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements.html).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from rsauth.sandbox._policy import Decision, Match, decide, principal_match, trust

ROLE = "arn:aws:iam::123456789012:role/app"
USER = "arn:aws:iam::123456789012:user/ann"
SESSION = "arn:aws:sts::123456789012:assumed-role/app/job-1"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.mark.parametrize(
    ("action", "resource", "expected"),
    [
        ("secretsmanager:GetSecretValue", SECRET, Decision.ALLOW),
        ("SecretsManager:getsecretvalue", SECRET, Decision.ALLOW),  # actions ignore case
        ("secretsmanager:GetSecretValue", SECRET.upper(), Decision.IMPLICIT_DENY),
        ("secretsmanager:DescribeSecret", SECRET, Decision.IMPLICIT_DENY),
        ("secretsmanager:GetSecretValue", SECRET + "x", Decision.IMPLICIT_DENY),
    ],
)
def test_question_mark_and_star(action: str, resource: str, expected: Decision) -> None:
    document = policy({
        "Effect": "Allow",
        "Action": "secretsmanager:Get?ecretValue",
        "Resource": "arn:aws:secretsmanager:*:123456789012:secret:db-??????",
    })
    assert decide([document], action, resource) is expected


def test_explicit_deny_in_any_document_wins() -> None:
    allow_all = policy({"Effect": "Allow", "Action": "*", "Resource": "*"})
    deny = policy({"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"})
    assert decide([allow_all, deny], "kms:Decrypt", "arn:aws:kms:x") is Decision.EXPLICIT_DENY
    assert decide([allow_all, deny], "kms:Encrypt", "arn:aws:kms:x") is Decision.ALLOW


def test_not_resource_and_not_action() -> None:
    document = policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::private/*"},
        {"Effect": "Deny", "NotAction": ["s3:Get*", "s3:List*"], "Resource": "*"},
    )
    assert decide([document], "s3:GetObject", "arn:aws:s3:::public/a") is Decision.ALLOW
    assert decide([document], "s3:GetObject", "arn:aws:s3:::private/a") is (
        Decision.IMPLICIT_DENY
    )
    assert decide([document], "s3:PutObject", "arn:aws:s3:::public/a") is (
        Decision.EXPLICIT_DENY
    )


def test_conditions_never_make_the_sandbox_stricter_than_aws() -> None:
    document = policy(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*",
         "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}},
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}},
    )
    assert decide([document], "sts:AssumeRole", ROLE) is Decision.ALLOW


@pytest.mark.parametrize(
    "document",
    ["", "{}", "not json", json.dumps({"Statement": "x"}), json.dumps([1])],
)
def test_a_document_that_is_not_a_policy_allows_nothing(document: str) -> None:
    assert decide([document], "s3:GetObject", "arn:aws:s3:::b/k") is Decision.IMPLICIT_DENY


def test_percent_encoded_documents_as_iam_returns_them() -> None:
    document = urllib.parse.quote(policy({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    assert decide([document], "s3:GetObject", "arn:aws:s3:::b/k") is Decision.ALLOW


@pytest.mark.parametrize(
    ("principal", "caller", "expected"),
    [
        ("*", USER, Match.ACCOUNT),
        ({"AWS": "arn:aws:iam::123456789012:root"}, USER, Match.ACCOUNT),
        ({"AWS": "123456789012"}, SESSION, Match.ACCOUNT),
        ({"AWS": "arn:aws:iam::999999999999:root"}, USER, Match.NONE),
        ({"AWS": [USER]}, USER, Match.EXACT),
        ({"AWS": ROLE}, SESSION, Match.EXACT),  # a role's ARN names its sessions
        ({"AWS": ROLE}, USER, Match.NONE),
        ({"Service": "redshift.amazonaws.com"}, "redshift.amazonaws.com", Match.EXACT),
        ({"Service": "redshift.amazonaws.com"}, USER, Match.NONE),
        ({"AWS": USER}, "redshift.amazonaws.com", Match.NONE),
    ],
)
def test_principals(principal: Any, caller: str, expected: Match) -> None:
    assert principal_match(principal, caller) is expected


def test_trust_needs_the_action_for_the_principal() -> None:
    document = policy(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
         "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"AWS": USER}, "Action": "sts:TagSession"},
        {"Effect": "Deny", "Principal": {"AWS": SESSION}, "Action": "sts:*"},
    )
    assert trust(document, USER, "sts:AssumeRole") == (Decision.ALLOW, Match.ACCOUNT)
    assert trust(document, USER, "sts:TagSession") == (Decision.ALLOW, Match.EXACT)
    assert trust(document, SESSION, "sts:AssumeRole")[0] is Decision.EXPLICIT_DENY
    assert trust(document, ROLE.replace("app", "other") + "x", "sts:TagSession")[0] is (
        Decision.IMPLICIT_DENY
    )


def test_the_gate_answers_copy_and_unload_checks_from_moto() -> None:
    # What the sandbox's COPY/UNLOAD code asks: may Redshift assume the role, may the
    # role read the object (s3:GetObject on arn:aws:s3:::bucket/key,
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
    import threading

    import boto3
    import moto

    from rsauth.sandbox._access import Gate
    from rsauth.sandbox._moto import MotoBridge

    class Plane:
        account_id = "123456789012"
        _lock = threading.Lock()

    with moto.mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        trust_doc = policy({"Effect": "Allow", "Principal": {"Service": "redshift.amazonaws.com"},
                            "Action": "sts:AssumeRole"})
        arn = iam.create_role(RoleName="loader", AssumeRolePolicyDocument=trust_doc)["Role"]["Arn"]
        iam.put_role_policy(RoleName="loader", PolicyName="s3", PolicyDocument=policy(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::in/*"}))
        bridge = MotoBridge("123456789012", "us-east-1")
        gate = Gate(bridge, Plane())  # type: ignore[arg-type]
        assert gate.is_allowed(arn, "s3:GetObject", "arn:aws:s3:::in/a.csv")
        assert not gate.is_allowed(arn, "s3:GetObject", "arn:aws:s3:::out/a.csv")
        assert gate.role_trusts(arn, "redshift.amazonaws.com")
        assert not gate.role_trusts(arn, USER)
        assert not gate.role_trusts(arn.replace("loader", "missing"), "redshift.amazonaws.com")
        loose = Gate(bridge, Plane(), enforce_iam=False)  # type: ignore[arg-type]
        assert loose.is_allowed(arn, "s3:GetObject", "arn:aws:s3:::out/a.csv")
