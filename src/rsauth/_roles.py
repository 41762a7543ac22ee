"""The IAM roles a namespace may use (``GetNamespace``), for :mod:`rsauth.etl`'s role checks.

Loaded on first use: a process that only connects never imports it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from rsauth._endpoint import get_namespace

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient

    from rsauth._sources import AwsContext

__all__ = ["NamespaceRoles", "namespace_roles"]


class NamespaceRoles(NamedTuple):
    """The IAM roles a namespace may use for COPY, UNLOAD and the like (``GetNamespace``)."""

    namespace: str
    default_role: str | None
    roles: tuple[str, ...]


# Real GetNamespace answers iamRoles as "IamRole(applyStatus=in-sync, iamRoleArn=arn:...)";
# the sandbox (and moto) as the bare ARN.
_IAM_ROLE_ARN = re.compile(r"iamRoleArn=([^,)\s]+)")


def namespace_roles(
    client: RedshiftServerlessClient, *, namespace: str, context: AwsContext
) -> NamespaceRoles:
    """``defaultIamRoleArn`` and ``iamRoles`` of ``namespace`` (``GetNamespace``)."""
    facts = get_namespace(client, namespace=namespace, context=context)
    roles: list[str] = []
    for entry in facts.get("iamRoles") or []:
        match = _IAM_ROLE_ARN.search(entry)
        arn = match.group(1) if match else entry.strip()
        if arn and arn not in roles:
            roles.append(arn)
    return NamespaceRoles(
        namespace=namespace,
        default_role=facts.get("defaultIamRoleArn") or None,
        roles=tuple(roles),
    )
