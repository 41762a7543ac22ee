"""Mapping botocore exceptions to rsauth errors, and reading AWS responses."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
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

__all__ = ["REFUSED_CREDENTIALS", "as_utc", "error_code", "map_aws_error", "server_time"]

_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "DecryptionFailure",
        "UnauthorizedOperation",
    }
)

# AWS refusing the credentials themselves, not the identity's permissions; each code from
# the services' common errors (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html,
# https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/CommonErrors.html,
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html). botocore's
# standard retry mode retries none of them (botocore/retries/standard.py), nor does rsauth.
_UNKNOWN_KEY = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId"}
)
_BAD_SIGNATURE = frozenset({"InvalidSignatureException", "SignatureDoesNotMatch"})
_EXPIRED_TOKEN = frozenset({"ExpiredToken", "ExpiredTokenException"})
_SKEWED = frozenset({"RequestTimeTooSkewed"})
REFUSED_CREDENTIALS = _UNKNOWN_KEY | _BAD_SIGNATURE | _EXPIRED_TOKEN | _SKEWED

# "Signature expired: 20261203T170000Z is now earlier than 20261203T171500Z
# (20261203T172000Z - 5 min.)": the request's time, then AWS's own in parentheses. Read
# only on that error, so compiled there (re's cache) rather than at import.
_SIGNATURE_EXPIRED = r"Signature (?:expired|not yet current): (\d{8}T\d{6}Z).*\((\d{8}T\d{6}Z)"
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
    now: Callable[[], datetime] | None = None,
) -> RsauthError:
    """The rsauth error for ``exc``, raised while ``doing`` (e.g. "GetCredentials") on ``subject``.

    ``identity`` is called only when AWS denies that identity a permission, to name it;
    ``now`` (default: the system clock) only to tell how far off a skewed clock is.
    """
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in REFUSED_CREDENTIALS:
            return AccessDeniedError(
                f"AWS refused the credentials for {doing} in {region}: {message} ({code}). "
                f"{_refused_credentials_advice(code, message, exc.response, now)}"
            )
        if code in _DENIED:
            return AccessDeniedError(
                f"{identity()} was refused {doing} on {subject} in {region}: {message} ({code}). "
                "Grant that identity the permission, or use profile= or role_arn= for another "
                "identity"
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


def _refused_credentials_advice(
    code: str, message: str, response: Mapping[str, Any], now: Callable[[], datetime] | None
) -> str:
    """What to do when AWS refuses the credentials themselves (never worth a retry)."""
    skew = _clock_skew(code, message, response, now)
    if skew is not None:
        minutes = round(abs(skew.total_seconds()) / 60)
        side = "behind" if skew.total_seconds() < 0 else "ahead of"
        return (
            f"This machine's clock is {minutes} minutes {side} AWS's time, and AWS refuses "
            "requests signed more than 5 minutes off: set the clock right (NTP) and retry"
        )
    if code in _UNKNOWN_KEY:
        return (
            "AWS does not know the access key in use: the access key is not valid (mistyped, "
            "deleted or deactivated, or temporary keys given without their session token). "
            "Check AWS_ACCESS_KEY_ID / the profile's keys"
        )
    if code in _BAD_SIGNATURE:
        return (
            "The request signature did not match: the secret access key does not match the "
            "access key id. Check AWS_SECRET_ACCESS_KEY / the profile's secret key"
        )
    return (
        "The session token of these temporary credentials has expired: refresh the session "
        "(aws sso login, assume the role again, or fetch new credentials)"
    )


def _clock_skew(
    code: str, message: str, response: Mapping[str, Any], now: Callable[[], datetime] | None
) -> timedelta | None:
    """How far this machine's clock is from AWS's (negative: behind), if the error says."""
    match = re.search(_SIGNATURE_EXPIRED, message)
    if match:
        sent, server = (
            datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            for stamp in match.groups()
        )
        return sent - server
    if code in _SKEWED:
        server_now = server_time(response)
        if server_now is not None:
            return (now or _utcnow)() - server_now
    return None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
