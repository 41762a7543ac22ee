"""``secret``: a username/password from AWS Secrets Manager.

The secret is ``secret_id`` or the namespace's Redshift-managed admin secret
(``adminPasswordSecretArn`` from ``GetNamespace``). It is JSON with at least
``username`` and ``password``, optionally ``host``, ``port`` and ``dbname``.
Each login carries the secret's ``VersionId``, so the broker can tell a
re-fetched unchanged secret from a rotated one and then try ``AWSPENDING``,
the version the database already holds in the middle of a rotation.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from rsauth._aws import error_code, map_aws_error
from rsauth._cache import Lease
from rsauth._endpoint import get_namespace
from rsauth._errors import ConfigurationError, NotFoundError
from rsauth._sources import AwsContext, Login

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

__all__ = ["CURRENT", "PENDING", "SecretSource", "admin_secret_arn", "parse_secret"]

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"


class SecretSource:
    """Reads one stage of a secret with ``GetSecretValue``."""

    METHOD = "secret"

    def __init__(
        self,
        client: SecretsManagerClient,
        *,
        secret_id: str,
        context: AwsContext,
        refresh_after: float,
    ) -> None:
        self._client = client
        self._secret_id = secret_id
        self._context = context
        self._refresh_after = refresh_after

    def load(self) -> Lease[Login]:
        """The ``AWSCURRENT`` login, to be re-read after the refresh interval."""
        login = self._get(CURRENT)
        assert login is not None
        return Lease(login, refresh_after=self._refresh_after)

    def load_pending(self) -> Login | None:
        """The ``AWSPENDING`` login, or ``None`` when no rotation is in progress."""
        return self._get(PENDING)

    def _get(self, stage: str) -> Login | None:
        try:
            response = self._client.get_secret_value(SecretId=self._secret_id, VersionStage=stage)
        except ClientError as exc:
            if stage == PENDING and error_code(exc) == "ResourceNotFoundException":
                return None
            raise self._mapped(exc) from exc
        except BotoCoreError as exc:
            raise self._mapped(exc) from exc
        return parse_secret(
            response.get("SecretString"),
            secret_id=self._secret_id,
            version_id=response.get("VersionId"),
        )

    def _mapped(self, exc: Exception) -> Exception:
        return map_aws_error(
            exc,
            doing="secretsmanager:GetSecretValue",
            subject=f"secret {self._secret_id!r}",
            region=self._context.region,
            identity=self._context.identity,
        )


def parse_secret(text: str | None, *, secret_id: str, version_id: str | None) -> Login:
    """The login in a secret's JSON; the error names the secret and the keys, never a value."""
    try:
        data: Any = json.loads(text) if text else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"secret {secret_id!r} is not a JSON object; rsauth expects "
            '{"username": ..., "password": ...} (optionally host, port, dbname)'
        )
    user, password = data.get("username"), data.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise ConfigurationError(
            f"secret {secret_id!r} needs string fields 'username' and 'password'; "
            f"it has: {', '.join(sorted(map(str, data))) or 'no fields'}"
        )
    port = data.get("port")
    return Login(
        user=user,
        password=password,
        method=SecretSource.METHOD,
        version_id=version_id,
        host=data.get("host") if isinstance(data.get("host"), str) else None,
        port=int(port) if isinstance(port, int | str) and str(port).isdigit() else None,
        database=data.get("dbname") if isinstance(data.get("dbname"), str) else None,
    )


def admin_secret_arn(
    client: RedshiftServerlessClient, *, namespace: str, context: AwsContext
) -> str:
    """The ARN of the namespace's Redshift-managed admin secret (``GetNamespace``)."""
    arn = get_namespace(client, namespace=namespace, context=context).get(
        "adminPasswordSecretArn"
    )
    if not arn:
        raise NotFoundError(
            f"namespace {namespace!r} in {context.region} has no Redshift-managed admin "
            "secret (manageAdminPassword is off); pass secret_id= of a secret holding the login"
        )
    return str(arn)
