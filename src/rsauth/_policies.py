"""The least IAM policy each way of logging in needs, written once.

The policies of docs/login-methods.md and the tests that log in under exactly these policies
(through the sandbox, which evaluates them as IAM does) both come from here,
so the documented policy is the tested one.

Actions and resource types follow the service authorization references:
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonredshiftserverless.html
(``GetCredentials``, ``GetWorkgroup`` and the custom-domain operations act on a
workgroup ARN, ``GetNamespace`` on a namespace ARN, ``List*`` on ``*``),
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecretsmanager.html
and
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awskeymanagementservice.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERSION = "2012-10-17"

# Placeholders a reader replaces; the tests pass real values.
REGION = "<region>"
ACCOUNT = "<account-id>"
WORKGROUP_ID = "<workgroup-id>"
NAMESPACE_ID = "<namespace-id>"
NAMESPACE = "<namespace>"


@dataclass(frozen=True)
class Target:
    """Where the login goes: the ARNs a policy names."""

    region: str = REGION
    account: str = ACCOUNT
    workgroup_id: str = WORKGROUP_ID
    namespace_id: str = NAMESPACE_ID
    namespace: str = NAMESPACE

    @property
    def workgroup_arn(self) -> str:
        return f"{self._serverless}:workgroup/{self.workgroup_id}"

    @property
    def namespace_arn(self) -> str:
        return f"{self._serverless}:namespace/{self.namespace_id}"

    @property
    def _serverless(self) -> str:
        return f"arn:aws:redshift-serverless:{self.region}:{self.account}"

    @property
    def managed_secret_arn(self) -> str:
        # Secrets that another service manages carry its prefix ("redshift!") in their
        # name, and every secret ARN ends in "-" and six random characters:
        # https://docs.aws.amazon.com/secretsmanager/latest/userguide/service-linked-secrets.html
        # https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_iam-permissions.html
        return (
            f"arn:aws:secretsmanager:{self.region}:{self.account}:"
            f"secret:redshift!{self.namespace}-*"
        )


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions if len(actions) > 1 else actions[0],
        "Resource": resources if len(resources) > 1 else resources[0],
    }


def login_policy(
    method: str,
    target: Target = Target(),
    *,
    custom_domain: bool = False,
    secret_arn: str | None = None,
    kms_key_arn: str | None = None,
    etl: bool = False,
    fleet_kms_key_arn: str | None = None,
) -> dict[str, Any]:
    """The identity policy for one way of logging in (``iam``, ``superuser`` or ``secret``).

    With ``role_arn=``, this belongs to the role; the caller then needs
    :func:`assume_role_policy` and the role the trust of :func:`trust_policy`.
    ``secret_arn`` is a secret named with ``secret_id=`` (no namespace lookup);
    ``kms_key_arn`` the customer managed key it is encrypted with, if any.
    ``etl`` adds what ``rsauth.etl`` reads to check COPY/UNLOAD roles;
    ``fleet_kms_key_arn`` the KMS key of fleet mode's per-identity keys.
    """
    if method not in ("iam", "superuser", "secret"):
        raise ValueError(f"method must be one of iam, superuser, secret, not {method!r}")
    serverless = "redshift-serverless:"
    statements: list[dict[str, Any]] = []
    if custom_domain:
        # A custom domain names no workgroup: its association says which, then
        # GetWorkgroup gives the port.
        statements.append(
            _statement("FindCustomDomain", [serverless + "ListCustomDomainAssociations"], ["*"])
        )
    workgroup, namespace = [target.workgroup_arn], [target.namespace_arn]
    get_namespace = [serverless + "GetNamespace"]
    if method in ("iam", "superuser"):
        login = [serverless + "GetWorkgroup", serverless + "GetCredentials"]
        statements.append(_statement("Login", login, workgroup))
    else:
        statements.append(_statement("FindEndpoint", [serverless + "GetWorkgroup"], workgroup))
        read = ["secretsmanager:GetSecretValue"]
        if secret_arn is None:
            statements.append(_statement("FindAdminSecret", get_namespace, namespace))
            statements.append(_statement("ReadAdminSecret", read, [target.managed_secret_arn]))
        else:
            statements.append(_statement("ReadSecret", read, [secret_arn]))
            if kms_key_arn:
                statements.append(_statement("DecryptSecret", ["kms:Decrypt"], [kms_key_arn]))
    if etl and not (method == "secret" and secret_arn is None):
        statements.append(_statement("CheckCopyRoles", get_namespace, namespace))
    if fleet_kms_key_arn:
        keys = ["kms:GenerateDataKey", "kms:Decrypt"]
        statements.append(_statement("FleetKeys", keys, [fleet_kms_key_arn]))
    return {"Version": VERSION, "Statement": statements}


def assume_role_policy(role_arn: str, *, db_roles: bool = False) -> dict[str, Any]:
    """What the caller needs to assume ``role_arn`` (and tag the session for ``db_roles=``)."""
    actions = ["sts:AssumeRole", "sts:TagSession"] if db_roles else ["sts:AssumeRole"]
    return {"Version": VERSION, "Statement": [_statement("AssumeLoginRole", actions, [role_arn])]}


def trust_policy(principal_arn: str, *, db_roles: bool = False) -> dict[str, Any]:
    """The role's trust policy that lets ``principal_arn`` assume it (and tag the session)."""
    actions = ["sts:AssumeRole", "sts:TagSession"] if db_roles else ["sts:AssumeRole"]
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": principal_arn},
        "Action": actions if len(actions) > 1 else actions[0],
    }
    return {"Version": VERSION, "Statement": [statement]}
