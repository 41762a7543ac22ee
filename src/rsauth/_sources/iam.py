"""``iam``: a temporary database password from ``redshift-serverless:GetCredentials``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from rsauth._aws import as_utc, map_aws_error, server_time
from rsauth._cache import Lease
from rsauth._sources import AwsContext, Login

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient

__all__ = ["IamSource"]

# The server's Date header has one-second resolution: count the lifetime short by that.
_DATE_RESOLUTION = 1.0


class IamSource:
    """Calls ``GetCredentials`` as the session's identity; ``dbName`` and ``durationSeconds``
    are always sent, so the login is for the right database and lives as long as asked."""

    METHOD = "iam"

    def __init__(
        self,
        client: RedshiftServerlessClient,
        *,
        workgroup: str | None,
        custom_domain: str | None,
        database: str,
        duration: int,
        context: AwsContext,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._workgroup = workgroup
        self._custom_domain = custom_domain
        self._database = database
        self._duration = duration
        self._context = context
        self._clock = clock

    @property
    def subject(self) -> str:
        if self._custom_domain:
            return f"custom domain {self._custom_domain!r}"
        return f"workgroup {self._workgroup!r}"

    def request(self) -> dict[str, Any]:
        """The GetCredentials parameters (no secret in them)."""
        params: dict[str, Any] = {"dbName": self._database, "durationSeconds": self._duration}
        if self._custom_domain:
            params["customDomainName"] = self._custom_domain
        else:
            params["workgroupName"] = self._workgroup
        return params

    def load(self) -> Lease[Login]:
        issued_local = self._clock()
        try:
            response = self._client.get_credentials(**self.request())
        except (ClientError, BotoCoreError) as exc:
            raise map_aws_error(
                exc,
                doing="redshift-serverless:GetCredentials",
                subject=self.subject,
                region=self._context.region,
                identity=self._context.identity,
            ) from exc
        return lease_from_response(response, method=self.METHOD, issued_local=issued_local)


def lease_from_response(response: Any, *, method: str, issued_local: datetime) -> Lease[Login]:
    """The login in a GetCredentials response, with its lifetime by the server's own clock.

    ``expires_at`` is translated to the local clock (when the request was sent,
    plus the lifetime), so it and ``expires_in`` hold under clock skew.
    """
    expires_at = as_utc(response["expiration"])
    issued = server_time(response)
    if issued is not None:
        lifetime = (expires_at - issued).total_seconds() - _DATE_RESOLUTION
    else:
        lifetime = (expires_at - issued_local).total_seconds()
    login = Login(
        user=response["dbUser"],
        password=response["dbPassword"],
        method=method,
        # On this machine's clock, so expires_in is right however skewed that clock is.
        expires_at=issued_local + timedelta(seconds=lifetime),
    )
    return Lease(login, lifetime=lifetime)
