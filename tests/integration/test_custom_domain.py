"""rsauth reaches a workgroup through its custom domain, on the workgroup's own port."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from tests.resolve import free_port, resolve_to_loopback

import rsauth
from rsauth.sandbox import Sandbox

ACCOUNT = "123456789012"
CERTIFICATE = f"arn:aws:acm:us-west-2:{ACCOUNT}:certificate/11111111-2222-4333-8444-555555555555"


def scalar(connection: Any, sql: str) -> Any:
    cursor = connection.cursor()
    cursor.execute(sql)
    row = cursor.fetchone()
    cursor.close()
    return row[0]




@pytest.fixture
def domain(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """A workgroup on a port other than 5439 with a custom domain resolving to loopback.

    In us-west-2: the sandbox's own region keeps only its default workgroup."""
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    client = boto3.client("redshift-serverless", region_name="us-west-2")
    suffix = uuid.uuid4().hex[:8]
    client.create_namespace(namespaceName=f"cd-ns-{suffix}", dbName="dev")
    asked = free_port(8191, 8215) or free_port(5431, 5455)
    settings: dict[str, Any] = {"port": asked} if asked is not None else {}
    workgroup = client.create_workgroup(
        workgroupName=f"cd-{suffix}", namespaceName=f"cd-ns-{suffix}", **settings
    )["workgroup"]
    name = f"warehouse-{suffix}.example.com"
    client.create_custom_domain_association(
        workgroupName=f"cd-{suffix}", customDomainName=name,
        customDomainCertificateArn=CERTIFICATE,
    )
    resolve_to_loopback(monkeypatch, name)
    port = workgroup["endpoint"]["port"]
    assert port != 5439
    yield name, port
    client.delete_custom_domain_association(workgroupName=f"cd-{suffix}", customDomainName=name)


def test_connect_through_a_custom_domain_finds_the_workgroups_port(
    sandbox: Sandbox, domain: tuple[str, int]
) -> None:
    # GetCustomDomainAssociation needs the workgroup name, so the workgroup is found with
    # ListCustomDomainAssociations(customDomainName=...), then GetWorkgroup gives the port
    # (botocore/data/redshift-serverless/2021-04-21/service-2.json).
    name, port = domain
    sandbox.reset_calls()
    with rsauth.Broker() as broker:
        with broker.connect(custom_domain=name, timeout=10) as connection:
            assert scalar(connection, "select current_user") == "IAM:sandbox-admin"
        credentials = broker.credentials(custom_domain=name)
        assert (credentials.host, credentials.port) == (name, port)
        with broker.connect(custom_domain=name, timeout=10):
            pass
    calls = sandbox.calls()
    # Looked up once, cached like a workgroup's endpoint.
    assert calls.get("redshift-serverless.ListCustomDomainAssociations") == 1
    assert calls.get("redshift-serverless.GetWorkgroup") == 1


def test_an_explicit_port_skips_the_lookup(sandbox: Sandbox, domain: tuple[str, int]) -> None:
    name, port = domain
    sandbox.reset_calls()
    with rsauth.Broker() as broker:
        credentials = broker.credentials(custom_domain=name, port=port)
    assert credentials.port == port
    assert "redshift-serverless.ListCustomDomainAssociations" not in sandbox.calls()


def test_an_unknown_custom_domain_is_not_found(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"nowhere-{uuid.uuid4().hex[:8]}.example.com"
    resolve_to_loopback(monkeypatch, name)
    with rsauth.Broker() as broker, pytest.raises(rsauth.NotFoundError, match=name):
        broker.credentials(custom_domain=name)


def test_a_network_failure_drops_the_cached_port(
    sandbox: Sandbox, domain: tuple[str, int]
) -> None:
    # As a workgroup's endpoint: dropped when connecting fails at the network level, so the
    # next call looks the custom domain up again.
    name, _ = domain
    with rsauth.Broker(connect_attempts=1, sleep=lambda _: None) as broker:
        with broker.connect(custom_domain=name, timeout=10):
            pass
        sandbox.reset_calls()
        sandbox.front_fault("reset_after_accept", count=1)
        with pytest.raises(rsauth.ConnectError):
            broker.connect(custom_domain=name, timeout=10)
        with broker.connect(custom_domain=name, timeout=10):
            pass
    assert sandbox.calls().get("redshift-serverless.ListCustomDomainAssociations") == 1
