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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from rsauth import _config
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
    return Login(
        user=_checked(secret_id, "username", user),
        password=_checked(secret_id, "password", password),
        method=SecretSource.METHOD,
        version_id=version_id,
        host=_checked(secret_id, "host", data.get("host")),
        port=_port(secret_id, data.get("port")),
        database=_checked(secret_id, "dbname", data.get("dbname")),
    )


# What each key of a secret must be, checked like the same setting given directly (a
# secret is made by hand, and its values end up in a pgpass line, a URI or psql's
# environment); the message names the key, never its value.
_RULES: dict[str, tuple[Callable[[str, object], object], str]] = {
    "username": (_config.SETTINGS_BY_NAME["user"].parse,
                 "a Redshift user name (1 to 127 bytes of printable characters)"),
    "password": (_config.SETTINGS_BY_NAME["password"].parse,
                 "a password without control characters"),
    "host": (_config.check_host,
             "a DNS name (ASCII letters, digits, hyphens and dots) or an IP address"),
    "dbname": (_config.SETTINGS_BY_NAME["database"].parse,
               "a Redshift database name (1 to 127 bytes of printable characters)"),
}


def _checked(secret_id: str, key: str, value: object) -> Any:
    if value is None or (value == "" and key in {"host", "dbname"}):
        return None
    check, what = _RULES[key]
    try:
        return check(key, value)
    except ConfigurationError:
        raise ConfigurationError(
            f"secret {secret_id!r}: its {key!r} is not {what}; fix the secret's JSON"
        ) from None


def _port(secret_id: str, raw: object) -> int | None:
    if raw is None:
        return None
    port = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        port = int(raw)
    if port is None or not 1 <= port <= 65535:
        raise ConfigurationError(
            f"secret {secret_id!r}: its 'port' is not a TCP port (a whole number from 1 "
            "to 65535, or a string of its digits); fix the secret's JSON"
        )
    return port


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
