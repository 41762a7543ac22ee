"""The control plane answers in AWS's shapes, lives in regions, serves workgroups on their
own ports and custom domains. Each test names the source of the behaviour it checks."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import redshift_connector
from botocore.exceptions import ClientError
from redshift_connector.error import InterfaceError
from tests.resolve import free_port, resolve_to_loopback

from rsauth.sandbox import Sandbox

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient

ACCOUNT = "123456789012"
# What these tests create lives in another region than the sandbox's own (us-east-1), which
# other tests expect to hold only the default namespace and workgroup.
REGION = "us-west-2"
CERTIFICATE = f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def serverless(region: str = REGION) -> RedshiftServerlessClient:
    client: RedshiftServerlessClient = boto3.client(
        "redshift-serverless", region_name=region
    )
    return client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_workgroup(
    client: RedshiftServerlessClient, prefix: str, **settings: Any
) -> dict[str, Any]:
    namespace = unique(f"{prefix}-ns")
    client.create_namespace(namespaceName=namespace, dbName="dev")
    answer = client.create_workgroup(
        workgroupName=unique(prefix), namespaceName=namespace, **settings
    )
    return dict(answer["workgroup"])


def connect(host: str, port: int, user: str, password: str) -> Any:
    return redshift_connector.connect(
        host=host, port=port, database="dev", user=user, password=password,
        ssl=True, sslmode="verify-full", timeout=30,
    )


def scalar(connection: Any, sql: str) -> Any:
    cursor = connection.cursor()
    cursor.execute(sql)
    row = cursor.fetchone()
    cursor.close()
    return row[0]


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


# -- regions ---------------------------------------------------------------------------------


def test_resources_live_in_the_region_they_were_created_in(sandbox: Sandbox) -> None:
    # A resource is found only through its own region's endpoint: elsewhere AWS answers
    # ResourceNotFoundException (https://docs.aws.amazon.com/redshift-serverless/latest/
    # APIReference/API_GetWorkgroup.html lists it for an unknown workgroup).
    ireland = serverless("eu-west-1")
    namespace = unique("eu-ns")
    made = ireland.create_namespace(
        namespaceName=namespace, adminUsername="euadmin", manageAdminPassword=True
    )["namespace"]
    assert made["namespaceArn"].startswith(f"arn:aws:redshift-serverless:eu-west-1:{ACCOUNT}:")
    name = unique("eu")
    workgroup = ireland.create_workgroup(workgroupName=name, namespaceName=namespace)["workgroup"]
    assert workgroup["workgroupArn"].startswith(
        f"arn:aws:redshift-serverless:eu-west-1:{ACCOUNT}:workgroup/"
    )
    assert ireland.get_workgroup(workgroupName=name)["workgroup"]["workgroupName"] == name
    virginia = serverless("us-east-1")
    with pytest.raises(virginia.exceptions.ResourceNotFoundException):
        virginia.get_workgroup(workgroupName=name)
    with pytest.raises(virginia.exceptions.ResourceNotFoundException):
        virginia.get_namespace(namespaceName=namespace)
    with pytest.raises(virginia.exceptions.ResourceNotFoundException):
        virginia.get_credentials(workgroupName=name)
    assert name not in [w["workgroupName"] for w in virginia.list_workgroups()["workgroups"]]
    assert [w["workgroupName"] for w in ireland.list_workgroups()["workgroups"]] == [name]
    # Secrets Manager is regional (moto keeps a backend per region, as AWS does): the
    # managed admin secret is in the namespace's region.
    secret = made["adminPasswordSecretArn"]
    assert secret.startswith(f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:redshift!")
    assert boto3.client("secretsmanager", region_name="eu-west-1").describe_secret(
        SecretId=secret
    )["ARN"] == secret
    with pytest.raises(ClientError) as missing:
        boto3.client("secretsmanager", region_name="us-east-1").describe_secret(SecretId=secret)
    assert error_code(missing) == "ResourceNotFoundException"
    answer = ireland.get_credentials(workgroupName=name)
    with connect(sandbox.host, workgroup["endpoint"]["port"], answer["dbUser"],
                 answer["dbPassword"]) as connection:
        assert scalar(connection, "select current_user") == answer["dbUser"]


def test_a_region_aws_does_not_know_is_refused(sandbox: Sandbox) -> None:
    # AWS refuses a credential scope naming an unknown region before anything else:
    # InvalidSignatureException "Credential should be scoped to a valid region"
    # (aws/aws-sdk-js-v3#5576, aws/aws-sdk-java#1097). Regions: botocore/data/endpoints.json.
    client = serverless("mars-1")
    with pytest.raises(ClientError) as refused:
        client.get_workgroup(workgroupName=sandbox.workgroup)
    assert error_code(refused) == "InvalidSignatureException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "valid region" in str(refused.value)


# -- shapes ----------------------------------------------------------------------------------


def test_iam_roles_are_answered_in_awss_form(sandbox: Sandbox) -> None:
    # GetNamespace's iamRoles are strings "IamRole(applyStatus=in-sync, iamRoleArn=<arn>)",
    # the form hashicorp/terraform-provider-aws parses (internal/service/redshiftserverless/
    # namespace.go, flattenNamespaceIAMRoles).
    client = serverless()
    roles = [f"arn:aws:iam::{ACCOUNT}:role/first", f"arn:aws:iam::{ACCOUNT}:role/second"]
    namespace = unique("roles-ns")
    client.create_namespace(namespaceName=namespace, iamRoles=roles, defaultIamRoleArn=roles[1])
    answer = client.get_namespace(namespaceName=namespace)["namespace"]
    assert answer["iamRoles"] == [
        f"IamRole(applyStatus=in-sync, iamRoleArn={arn})" for arn in roles
    ]
    assert answer["defaultIamRoleArn"] == roles[1]


def test_update_namespace_takes_roles_and_default_together(sandbox: Sandbox) -> None:
    # UpdateNamespace: iamRoles "must be updated together with defaultIamRoleArn", and the
    # reverse (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/
    # API_UpdateNamespace.html; botocore's service-2.json says the same).
    client = serverless()
    roles = [f"arn:aws:iam::{ACCOUNT}:role/loader"]
    namespace = unique("update-ns")
    client.create_namespace(namespaceName=namespace)
    with pytest.raises(client.exceptions.ValidationException, match="together"):
        client.update_namespace(namespaceName=namespace, iamRoles=roles)
    with pytest.raises(client.exceptions.ValidationException, match="together"):
        client.update_namespace(namespaceName=namespace, defaultIamRoleArn=roles[0])
    updated = client.update_namespace(
        namespaceName=namespace, iamRoles=roles, defaultIamRoleArn=roles[0]
    )["namespace"]
    assert updated["defaultIamRoleArn"] == roles[0]
    cleared = client.update_namespace(
        namespaceName=namespace, iamRoles=roles, defaultIamRoleArn=""
    )["namespace"]
    assert "defaultIamRoleArn" not in cleared
    assert cleared["iamRoles"] == [f"IamRole(applyStatus=in-sync, iamRoleArn={roles[0]})"]


def test_a_workgroup_lists_the_default_config_parameters(sandbox: Sandbox) -> None:
    # CreateWorkgroup's configParameters options (https://docs.aws.amazon.com/
    # redshift-serverless/latest/APIReference/API_CreateWorkgroup.html), with Redshift's
    # default values (https://docs.aws.amazon.com/redshift/latest/mgmt/
    # working-with-parameter-groups.html).
    workgroup = serverless("us-east-1").get_workgroup(workgroupName=sandbox.workgroup)[
        "workgroup"
    ]
    parameters = {p["parameterKey"]: p["parameterValue"] for p in workgroup["configParameters"]}
    assert set(parameters) == {
        "auto_mv", "datestyle", "enable_case_sensitive_identifier",
        "enable_user_activity_logging", "query_group", "search_path",
        "max_query_execution_time", "require_ssl", "use_fips_ssl",
    }
    assert parameters["datestyle"] == "ISO, MDY"
    assert parameters["search_path"] == "$user, public"
    assert parameters["require_ssl"] == "true"
    made = make_workgroup(
        serverless(), "params",
        configParameters=[{"parameterKey": "max_query_execution_time", "parameterValue": "60"}],
    )
    given = {p["parameterKey"]: p["parameterValue"] for p in made["configParameters"]}
    assert given["max_query_execution_time"] == "60"
    assert given["datestyle"] == "ISO, MDY"


def test_iam_ids_have_awss_prefixes(sandbox: Sandbox) -> None:
    # Unique ids: AIDA for users, AROA for roles, 21 characters
    # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html).
    iam = boto3.client("iam")
    user = iam.create_user(UserName=unique("ids-user"))["User"]
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
    }]})
    role = iam.create_role(RoleName=unique("ids-role"), AssumeRolePolicyDocument=trust)["Role"]
    assert re.fullmatch(r"AIDA[A-Z0-9]{17}", user["UserId"])
    assert re.fullmatch(r"AROA[A-Z0-9]{17}", role["RoleId"])


# -- ports -----------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [5430, 5456, 8190, 8216, 443, 65535])
def test_ports_outside_awss_ranges_are_refused(sandbox: Sandbox, port: Any) -> None:
    # "Valid port ranges are 5431-5455 and 8191-8215" (https://docs.aws.amazon.com/
    # redshift-serverless/latest/APIReference/API_CreateWorkgroup.html).
    client = serverless()
    namespace = unique("port-ns")
    client.create_namespace(namespaceName=namespace)
    name = unique("badport")
    with pytest.raises(ClientError) as refused:
        client.create_workgroup(workgroupName=name, namespaceName=namespace, port=port)
    assert error_code(refused) == "ValidationException"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_workgroup(workgroupName=name)




def test_each_workgroup_is_served_on_its_own_port(sandbox: Sandbox) -> None:
    # GetWorkgroup: "port" is the port asked for, endpoint.port where it is served
    # (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_Workgroup.html).
    client = serverless()
    asked = free_port(8191, 8215)
    if asked is None:
        pytest.skip("no port of 8191-8215 is free on this machine")
    workgroup = make_workgroup(client, "ported", port=asked)
    assert workgroup["port"] == asked
    assert workgroup["endpoint"]["port"] == asked
    plain = make_workgroup(client, "unported")
    assert plain["port"] == 5439  # the default AWS reports
    served = {workgroup["endpoint"]["port"], plain["endpoint"]["port"], sandbox.port}
    assert len(served) == 3, "every workgroup has a port of its own"
    answer = client.get_credentials(workgroupName=workgroup["workgroupName"])
    before = sandbox.front_stats()["by_workgroup"].get(workgroup["workgroupName"], 0)
    with connect(sandbox.host, asked, answer["dbUser"], answer["dbPassword"]) as connection:
        assert scalar(connection, "select current_user") == answer["dbUser"]
    after = sandbox.front_stats()["by_workgroup"][workgroup["workgroupName"]]
    assert after == before + 1
    # The password is the workgroup's: the default workgroup's port does not take it (both
    # share one PostgreSQL; the front keeps each workgroup's temporary passwords apart).
    with pytest.raises(InterfaceError) as refused:
        connect(sandbox.host, sandbox.port, answer["dbUser"], answer["dbPassword"])
    assert "password authentication failed" in str(refused.value)


def test_a_taken_port_is_served_on_a_free_one(sandbox: Sandbox) -> None:
    client = serverless()
    with socket.socket() as holder:
        taken = None
        for port in range(5431, 5456):
            try:
                holder.bind(("127.0.0.1", port))
            except OSError:
                continue
            taken = port
            break
        if taken is None:
            pytest.skip("no port of 5431-5455 could be held")
        holder.listen(1)
        workgroup = make_workgroup(client, "taken", port=taken)
    assert workgroup["port"] == taken
    assert workgroup["endpoint"]["port"] != taken
    answer = client.get_credentials(workgroupName=workgroup["workgroupName"])
    with connect(sandbox.host, workgroup["endpoint"]["port"], answer["dbUser"],
                 answer["dbPassword"]) as connection:
        assert scalar(connection, "select 1") == 1


# -- custom domains --------------------------------------------------------------------------


@pytest.fixture
def domain(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"{unique('db')}.example.com"
    resolve_to_loopback(monkeypatch, name)
    return name


def test_custom_domain_association_lifecycle(sandbox: Sandbox, domain: str) -> None:
    # Request and answer shapes: botocore/data/redshift-serverless/2021-04-21/service-2.json
    # (CreateCustomDomainAssociation ... DeleteCustomDomainAssociation, Association) and
    # https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/
    # API_CreateCustomDomainAssociation.html.
    client = serverless()
    workgroup = make_workgroup(client, "domained")
    name = workgroup["workgroupName"]
    made = client.create_custom_domain_association(
        workgroupName=name, customDomainName=domain, customDomainCertificateArn=CERTIFICATE
    )
    assert made["workgroupName"] == name
    assert made["customDomainName"] == domain
    assert made["customDomainCertificateArn"] == CERTIFICATE
    assert made["customDomainCertificateExpiryTime"] is not None
    got = client.get_custom_domain_association(workgroupName=name, customDomainName=domain)
    assert got["customDomainName"] == domain
    listed = client.list_custom_domain_associations(customDomainName=domain)["associations"]
    assert [(a["workgroupName"], a["customDomainName"]) for a in listed] == [(name, domain)]
    described = client.get_workgroup(workgroupName=name)["workgroup"]
    assert described["customDomainName"] == domain
    assert described["customDomainCertificateArn"] == CERTIFICATE
    other = make_workgroup(client, "second")
    with pytest.raises(client.exceptions.ConflictException):
        client.create_custom_domain_association(
            workgroupName=other["workgroupName"], customDomainName=domain,
            customDomainCertificateArn=CERTIFICATE,
        )
    renewed = CERTIFICATE.replace("0a1b2c3d", "ffffffff")
    updated = client.update_custom_domain_association(
        workgroupName=name, customDomainName=domain, customDomainCertificateArn=renewed
    )
    assert updated["customDomainCertificateArn"] == renewed
    client.delete_custom_domain_association(workgroupName=name, customDomainName=domain)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_custom_domain_association(workgroupName=name, customDomainName=domain)
    assert "customDomainName" not in client.get_workgroup(workgroupName=name)["workgroup"]


@pytest.mark.parametrize(
    "certificate",
    ["arn:aws:iam::123456789012:server-certificate/x", "not-an-arn-at-all-but-long"],
)
def test_a_malformed_certificate_arn_is_refused(
    sandbox: Sandbox, domain: str, certificate: str
) -> None:
    # CustomDomainCertificateArnString: 20-2048 characters, an ACM ARN (botocore's model).
    client = serverless("us-east-1")
    with pytest.raises(ClientError) as refused:
        client.create_custom_domain_association(
            workgroupName=sandbox.workgroup, customDomainName=domain,
            customDomainCertificateArn=certificate,
        )
    assert error_code(refused) == "ValidationException"


def test_a_custom_domain_reaches_its_workgroup_with_a_verified_certificate(
    sandbox: Sandbox, domain: str
) -> None:
    # GetCredentials(customDomainName=...) (https://docs.aws.amazon.com/redshift-serverless/
    # latest/APIReference/API_GetCredentials.html); the certificate covers the domain, as
    # the ACM certificate of a custom domain does.
    client = serverless()
    asked = free_port(5431, 5455)
    workgroup = make_workgroup(client, "reach", **({"port": asked} if asked else {}))
    client.create_custom_domain_association(
        workgroupName=workgroup["workgroupName"], customDomainName=domain,
        customDomainCertificateArn=CERTIFICATE,
    )
    answer = client.get_credentials(customDomainName=domain)
    port = workgroup["endpoint"]["port"]
    with connect(domain, port, answer["dbUser"], answer["dbPassword"]) as connection:
        assert scalar(connection, "select current_user") == answer["dbUser"]
    # The same port by its endpoint name presents the endpoint's certificate, not the domain's.
    with contextlib.closing(connect(sandbox.host, port, answer["dbUser"], answer["dbPassword"])):
        pass


# -- the database answers like Redshift ------------------------------------------------------


def test_version_answers_like_redshift(sandbox: Sandbox) -> None:
    # VERSION() (https://docs.aws.amazon.com/redshift/latest/dg/r_VERSION.html):
    # "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017
    # (Red Hat 3.4.2-6.fc3), Redshift 1.0.12103"; the startup parameter says 8.0.2.
    answer = serverless("us-east-1").get_credentials(workgroupName=sandbox.workgroup)
    with connect(sandbox.host, sandbox.port, answer["dbUser"], answer["dbPassword"]) as conn:
        version = scalar(conn, "select version()")
        assert version.startswith(
            "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 "
            "(Red Hat 3.4.2-6.fc3), Redshift 1.0."
        )
        assert scalar(conn, "show server_version") == "8.0.2"
