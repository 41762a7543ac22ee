"""Mapping botocore exceptions to rsauth errors, and reading AWS responses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from rsauth._errors import (
    AccessDeniedError,
    ConfigurationError,
    NotFoundError,
    RsauthError,
    ServiceError,
)

__all__ = ["as_utc", "error_code", "map_aws_error", "server_time"]

_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "DecryptionFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
    }
)
_NOT_FOUND = frozenset({"ResourceNotFoundException", "NotFoundException", "NoSuchEntity"})
_INVALID = frozenset(
    {"ValidationException", "InvalidParameterException", "InvalidRequestException"}
)


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "") or ""
    return code


def map_aws_error(
    exc: Exception,
    *,
    doing: str,
    subject: str,
    region: str,
    identity: Callable[[], str],
) -> RsauthError:
    """The rsauth error for ``exc``, raised while ``doing`` (e.g. "GetCredentials") on ``subject``.

    ``identity`` is called only for an access-denied error, to name who was refused.
    """
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _DENIED:
            return AccessDeniedError(
                f"{identity()} was refused {doing} on {subject} in {region}: {message} ({code}). "
                "Grant that identity the permission, or use another profile or role_arn="
            )
        if code in _NOT_FOUND:
            return NotFoundError(
                f"{subject} was not found in region {region} ({doing}: {message}). "
                "Check the name and the region"
            )
        if code in _INVALID:
            return ConfigurationError(f"AWS rejected {doing} on {subject} in {region}: {message}")
        return ServiceError(
            f"{doing} on {subject} in {region} failed after botocore's retries: "
            f"{message} ({code or status}). Try again later"
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigurationError(f"no usable AWS credentials for {doing} on {subject}: {exc}")
    if isinstance(exc, BotoCoreError):
        return ServiceError(
            f"{doing} on {subject} in {region} failed after botocore's retries: {exc}"
        )
    return ServiceError(f"{doing} on {subject} in {region} failed: {type(exc).__name__}")


def as_utc(value: object) -> datetime:
    """An AWS timestamp (datetime, or epoch seconds) as an aware UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except ValueError:
            return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise TypeError(f"not a timestamp: {type(value).__name__}")


def server_time(response: Mapping[str, Any]) -> datetime | None:
    """The server's clock when it answered (its ``Date`` header), if it sent one."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    date = headers.get("date")
    if not date:
        return None
    try:
        return as_utc(parsedate_to_datetime(date))
    except (TypeError, ValueError):
        return None
