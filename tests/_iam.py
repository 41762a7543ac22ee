"""IAM roles and users for tests, made through the ordinary IAM API of the sandbox.

The sandbox evaluates trust and permission policies as AWS does, so every role
a test assumes says who may assume it and what it may then do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import boto3

ACCOUNT = "123456789012"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"

# What rsauth's `iam` login does as the role: the documented minimal policy (docs/login-methods.md).
LOGIN_ACTIONS = ("redshift-serverless:GetWorkgroup", "redshift-serverless:GetCredentials")
WORKGROUPS = f"arn:aws:redshift-serverless:*:{ACCOUNT}:workgroup/*"


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions: Iterable[str] | str, resources: Iterable[str] | str = "*") -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Action": actions if isinstance(actions, str) else list(actions),
        "Resource": resources if isinstance(resources, str) else list(resources),
    }


def trust(*, aws: Iterable[str] = (ROOT,), services: Iterable[str] = ()) -> str:
    """A trust policy: ``aws`` principals may assume and tag; ``services`` may assume."""
    statements: list[dict[str, Any]] = []
    aws = list(aws)
    if aws:
        statements.append({
            "Effect": "Allow",
            "Principal": {"AWS": aws if len(aws) > 1 else aws[0]},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        })
    for service in services:
        statements.append({
            "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
        })
    return document(*statements)


def make_role(
    name: str,
    *statements: dict[str, Any],
    trust_policy: str | None = None,
    iam: Any = None,
) -> str:
    """A role the account can assume (and tag), allowed ``statements`` (default: log in).

    Idempotent: an existing role of that name gets this trust and these permissions.
    Returns the role's ARN.
    """
    iam = iam or boto3.client("iam")
    policy = trust_policy or trust()
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=policy)
    except iam.exceptions.EntityAlreadyExistsException:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=policy)
    iam.put_role_policy(
        RoleName=name,
        PolicyName="permissions",
        PolicyDocument=document(*(statements or (allow(LOGIN_ACTIONS, WORKGROUPS),))),
    )
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def make_user(name: str, *statements: dict[str, Any], iam: Any = None) -> dict[str, str]:
    """A user with one access key and ``statements`` as its inline policy (none: no policy).

    Returns keyword arguments for ``boto3.Session``.
    """
    iam = iam or boto3.client("iam")
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(
            UserName=name, PolicyName="permissions", PolicyDocument=document(*statements)
        )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }
