"""Signature Version 4 verification for every service on the sandbox's AWS endpoint.

The server side of "Create a signed AWS API request"
(https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
rebuild the canonical request from what arrived, derive the signing key from
the secret the access key id names, and compare signatures. Header-signed
requests for every service, and S3's presigned URLs (query parameters,
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html).

Failures are :class:`AuthFailure` with a protocol-neutral ``kind``;
:func:`rsauth.sandbox._errors.auth_error` words them per protocol.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

_ALGORITHM = "AWS4-HMAC-SHA256"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<headers>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_HEX_HASH = re.compile(r"^[0-9a-f]{64}$")
_AMZ_DATE_FORM = re.compile(r"^\d{8}T\d{6}Z$")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
# Payload hashes S3 accepts in place of a digest of the body
# (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
_S3_LITERAL_PAYLOADS = frozenset(
    {
        "UNSIGNED-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    }
)
# How far a request's time may be from the server's: 5 minutes in general
# (the "Signature expired: ... (... - 5 min.)" answer of JSON and query services),
# 15 minutes for S3 ("RequestTimeTooSkewed",
# https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html).
MAX_SKEW = 300.0
MAX_SKEW_S3 = 900.0


@dataclass(frozen=True)
class SigningKey:
    """What the server knows of an access key: whose it is and its secret material."""

    arn: str
    secret_access_key: str
    session_token: str | None = None
    expires: float | None = None  # epoch seconds, temporary credentials only
    internal: bool = False

    def __repr__(self) -> str:
        return f"SigningKey(arn={self.arn!r}, internal={self.internal})"


class AuthFailure(Exception):
    """Why a request is not authenticated.

    ``kind``: ``missing`` (no signature), ``malformed``, ``unknown_key``,
    ``invalid_token`` (session token missing or wrong), ``signature``,
    ``skewed`` (``detail`` holds AWS's message), ``expired_token``,
    ``expired_url`` (a presigned URL past its expiry), ``payload`` (the body
    does not match ``x-amz-content-sha256``).
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Signed:
    """The signature parts of one request."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    token: str | None
    presigned: bool
    expires_in: int | None


def scope_of(environ: dict[str, Any]) -> Signed | None:
    """The signature parts from the Authorization header or a presigned query; None if unsigned."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    if header:
        match = _AUTHORIZATION.match(header)
        if match is None:
            raise AuthFailure("malformed")
        credential = match["credential"].split("/")
        if len(credential) != 5 or credential[4] != "aws4_request":
            raise AuthFailure("malformed")
        amz_date = str(environ.get("HTTP_X_AMZ_DATE", ""))
        return Signed(
            access_key_id=credential[0],
            date=credential[1],
            region=credential[2],
            service=credential[3],
            signed_headers=tuple(match["headers"].split(";")),
            signature=match["signature"],
            amz_date=amz_date,
            token=environ.get("HTTP_X_AMZ_SECURITY_TOKEN"),
            presigned=False,
            expires_in=None,
        )
    query = _query_pairs(str(environ.get("QUERY_STRING", "")))
    params = dict(query)
    if params.get("X-Amz-Algorithm") != _ALGORITHM:
        return None
    try:
        credential = params["X-Amz-Credential"].split("/")
        signed = Signed(
            access_key_id=credential[0],
            date=credential[1],
            region=credential[2],
            service=credential[3],
            signed_headers=tuple(params["X-Amz-SignedHeaders"].split(";")),
            signature=params["X-Amz-Signature"],
            amz_date=params["X-Amz-Date"],
            token=params.get("X-Amz-Security-Token"),
            presigned=True,
            expires_in=int(params["X-Amz-Expires"]),
        )
    except (KeyError, IndexError, ValueError):
        raise AuthFailure("malformed") from None
    if len(credential) != 5:
        raise AuthFailure("malformed")
    return signed


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for piece in query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _raw_path(environ: dict[str, Any]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = str(raw).split("?", 1)[0]
        if "://" in path:  # an absolute-form request target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        return path or "/"
    return quote(str(environ.get("PATH_INFO", "/")), safe="/~") or "/"


def _canonical_path(environ: dict[str, Any], service: str) -> str:
    path = _raw_path(environ)
    if service == "s3":
        # S3 signs the path as sent: encoded once, not normalised.
        return path
    # Other services sign the normalised path encoded a second time.
    normalised = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.endswith("/") and normalised != "/":
        normalised += "/"
    return quote(normalised, safe="/~")


def _header(environ: dict[str, Any], name: str) -> str | None:
    if name == "content-type":
        value = environ.get("CONTENT_TYPE")
    elif name == "content-length":
        value = environ.get("CONTENT_LENGTH")
    else:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return None if value is None else str(value)


def payload_hash(environ: dict[str, Any], body: bytes, signed: Signed) -> str:
    """The payload hash the signature covers; checks a claimed digest against the body."""
    actual = hashlib.sha256(body).hexdigest()
    claimed = environ.get("HTTP_X_AMZ_CONTENT_SHA256")
    if signed.service == "s3":
        if claimed is None:
            return "UNSIGNED-PAYLOAD" if signed.presigned else actual
        if claimed in _S3_LITERAL_PAYLOADS:
            return str(claimed)
    if claimed is None:
        return actual
    if not _HEX_HASH.match(str(claimed)):
        return actual
    if claimed != actual:
        raise AuthFailure("payload")
    return str(claimed)


def canonical_request(environ: dict[str, Any], body: bytes, signed: Signed) -> str:
    pairs = _query_pairs(str(environ.get("QUERY_STRING", "")))
    if signed.presigned:
        pairs = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    query = "&".join(
        f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in pairs)
    )
    headers = []
    for name in signed.signed_headers:
        value = _header(environ, name)
        if value is None:
            raise AuthFailure("signature")
        headers.append(f"{name}:{' '.join(value.split())}\n")
    return "\n".join(
        [
            str(environ.get("REQUEST_METHOD", "GET")).upper(),
            _canonical_path(environ, signed.service),
            query,
            "".join(headers),
            ";".join(signed.signed_headers),
            payload_hash(environ, body, signed),
        ]
    )


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    # A day's key per secret, region and service: derived once, as clients do.
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, signed: Signed, canonical: str) -> str:
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    to_sign = "\n".join(
        [_ALGORITHM, signed.amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _signing_key(secret, signed.date, signed.region, signed.service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _stamp(seconds: float) -> str:
    return time.strftime(_AMZ_DATE, time.gmtime(seconds))


def _check_time(signed: Signed, now: float) -> None:
    stamp = signed.amz_date
    if not _AMZ_DATE_FORM.match(stamp):
        raise AuthFailure("malformed")
    fields = (stamp[0:4], stamp[4:6], stamp[6:8], stamp[9:11], stamp[11:13], stamp[13:15])
    when = float(calendar.timegm(tuple(int(f) for f in fields)))
    if signed.presigned:
        if signed.expires_in is not None and now > when + signed.expires_in:
            raise AuthFailure("expired_url")
        return
    limit = MAX_SKEW_S3 if signed.service == "s3" else MAX_SKEW
    if when < now - limit:
        raise AuthFailure(
            "skewed",
            f"Signature expired: {signed.amz_date} is now earlier than "
            f"{_stamp(now - MAX_SKEW)} ({_stamp(now)} - 5 min.)",
        )
    if when > now + limit:
        raise AuthFailure(
            "skewed",
            f"Signature not yet current: {signed.amz_date} is still later than "
            f"{_stamp(now + MAX_SKEW)} ({_stamp(now)} + 5 min.)",
        )


def verify(
    environ: dict[str, Any],
    body: bytes,
    lookup: Callable[[str], SigningKey | None],
    now: float,
) -> tuple[Signed, SigningKey]:
    """Authenticate one request: who signed it, or :class:`AuthFailure`."""
    signed = scope_of(environ)
    if signed is None:
        raise AuthFailure("missing")
    if not signed.amz_date or signed.amz_date[:8] != signed.date:
        raise AuthFailure("signature")
    key = lookup(signed.access_key_id)
    if key is None:
        raise AuthFailure("unknown_key")
    if (signed.token or None) != key.session_token:
        raise AuthFailure("invalid_token")
    expected = signature(key.secret_access_key, signed, canonical_request(environ, body, signed))
    if not hmac.compare_digest(expected, signed.signature):
        raise AuthFailure("signature")
    _check_time(signed, now)
    if key.expires is not None and now >= key.expires:
        raise AuthFailure("expired_token")
    return signed, key
