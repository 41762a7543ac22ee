"""Refused logins seen end to end: what is re-read, what is reported."""

from __future__ import annotations

import json

import boto3
import pytest

import rsauth
from rsauth.sandbox import Sandbox


def calls(sandbox: Sandbox, operation: str) -> int:
    return sandbox.calls().get(operation, 0)


@pytest.fixture
def admin_secret(sandbox: Sandbox) -> str:
    """The managed admin secret's name (the call that looks it up is not counted)."""
    name = f"redshift!{sandbox.namespace}-admin"
    boto3.client("secretsmanager").describe_secret(SecretId=name)
    sandbox.reset_calls()
    return name


def test_a_refused_admin_secret_outside_a_rotation_is_an_authentication_error(
    sandbox: Sandbox, admin_secret: str
) -> None:
    # Secrets Manager now holds a password the database never had, and no AWSPENDING
    # version exists: nothing rsauth can recover, and nothing is missing either.
    client = boto3.client("secretsmanager")
    original = client.get_secret_value(SecretId=admin_secret)["SecretString"]
    document = json.loads(original)
    document["password"] = "Stale1" + document["password"]
    client.put_secret_value(SecretId=admin_secret, SecretString=json.dumps(document))
    try:
        with rsauth.Broker() as broker, pytest.raises(rsauth.AuthenticationError) as caught:
            broker.connect(workgroup=sandbox.workgroup, method="secret")
    finally:
        # What the database holds goes back to AWSCURRENT.
        client.put_secret_value(SecretId=admin_secret, SecretString=original)
    assert not isinstance(caught.value, rsauth.NotFoundError)
    assert document["password"] not in str(caught.value)


def test_fallback_rereads_a_refused_secret(sandbox: Sandbox, admin_secret: str) -> None:
    sandbox.deny("IAM:sandbox-admin")
    with rsauth.Broker() as broker:
        broker.connect(workgroup=sandbox.workgroup, fallback=True).close()
        assert broker.credentials(workgroup=sandbox.workgroup, fallback=True).method == "secret"
        assert calls(sandbox, "secretsmanager.GetSecretValue") == 1

        # A whole rotation: the cached secret is now refused by the database, and no
        # AWSPENDING version is left to try; only re-reading AWSCURRENT gets in.
        sandbox.rotate_secret()
        connection = broker.connect(workgroup=sandbox.workgroup, fallback=True)
        connection.close()
    assert calls(sandbox, "secretsmanager.GetSecretValue") >= 2
