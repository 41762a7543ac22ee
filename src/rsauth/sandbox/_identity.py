"""How Redshift names the database user of an IAM principal."""

from __future__ import annotations


def database_user(principal_arn: str) -> str:
    """``IAM:<user>`` for an IAM user, ``IAMR:<role>`` for a role or any of its sessions."""
    resource = principal_arn.split(":", 5)[5]
    kind, _, rest = resource.partition("/")
    if kind == "user":
        return "IAM:" + rest.rsplit("/", 1)[-1]
    if kind == "assumed-role":
        return "IAMR:" + rest.split("/", 1)[0]
    if kind == "role":
        return "IAMR:" + rest.rsplit("/", 1)[-1]
    return "IAM:" + resource  # the account root has no Redshift analogue; keep it distinct


def normalize_identity(identity: str) -> str:
    """The database user for an ARN; ``IAM:``/``IAMR:`` names as given."""
    return database_user(identity) if identity.startswith("arn:") else identity
