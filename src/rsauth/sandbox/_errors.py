"""AWS error answers, shaped the way each protocol's clients parse them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

StartResponse = Callable[..., Any]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

# Per protocol, the code a fault is reported with (botocore retries each of these).
_FAULT_CODES = {
    ("json", "throttle"): ("ThrottlingException", 400),
    ("json", "server_error"): ("InternalServerException", 500),
    ("query", "throttle"): ("Throttling", 400),
    ("query", "server_error"): ("InternalFailure", 500),
    ("rest-xml", "throttle"): ("SlowDown", 503),
    ("rest-xml", "server_error"): ("InternalError", 500),
}


class ApiError(Exception):
    """An AWS error: a code such as ``ResourceNotFoundException``, a message, a status."""

    def __init__(self, code: str, message: str, status: int = 400, *, fault: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fault = fault


def protocol_of(service: str, environ: dict[str, Any]) -> str:
    if environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    if service == "s3":
        return "rest-xml"
    return "query"


def respond(
    start_response: StartResponse,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> list[bytes]:
    start_response(
        f"{status} {_REASONS.get(status, 'Error')}",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            *extra,
        ],
    )
    return [body]


def json_response(start_response: StartResponse, payload: dict[str, Any]) -> list[bytes]:
    return respond(start_response, 200, json.dumps(payload).encode(), "application/x-amz-json-1.1")


def error_response(
    start_response: StartResponse, error: ApiError, protocol: str = "json"
) -> list[bytes]:
    code, status = error.code, error.status
    if error.fault is not None:
        code, status = _FAULT_CODES.get((protocol, error.fault), (code, status))
    if protocol == "json":
        body = json.dumps({"__type": code, "message": error.message}).encode()
        return respond(
            start_response,
            status,
            body,
            "application/x-amz-json-1.1",
            [("X-Amzn-ErrorType", code)],
        )
    message = escape(error.message)
    request_id = uuid.uuid4()
    if protocol == "rest-xml":
        xml = (
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        xml = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        )
    return respond(start_response, status, xml.encode(), "text/xml")


_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
_INVALID_TOKEN = "The security token included in the request is invalid."
_EXPIRED_TOKEN = "The security token included in the request is expired"
_INCOMPLETE = "The request signature does not conform to AWS standards."

# Per protocol and kind of authentication failure: code, status, message.
# JSON 1.1 services answer 400 (seen from Secrets Manager:
# https://github.com/spring-attic/spring-cloud-aws/issues/492); the query
# protocol's codes and statuses are AWS's common errors
# (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html);
# S3's are its own error table
# (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
_AUTH_ERRORS: dict[tuple[str, str], tuple[str, int, str]] = {
    ("json", "missing"): (
        "MissingAuthenticationTokenException", 403, "Missing Authentication Token"
    ),
    ("json", "malformed"): ("IncompleteSignatureException", 400, _INCOMPLETE),
    ("json", "unknown_key"): ("UnrecognizedClientException", 400, _INVALID_TOKEN),
    ("json", "invalid_token"): ("UnrecognizedClientException", 400, _INVALID_TOKEN),
    ("json", "signature"): ("InvalidSignatureException", 400, _SIGNATURE_MISMATCH),
    ("json", "payload"): ("InvalidSignatureException", 400, _SIGNATURE_MISMATCH),
    ("json", "skewed"): ("InvalidSignatureException", 400, ""),
    ("json", "expired_url"): ("InvalidSignatureException", 400, "Signature expired"),
    ("json", "expired_token"): ("ExpiredTokenException", 400, _EXPIRED_TOKEN),
    ("query", "missing"): (
        "MissingAuthenticationToken", 403, "Request is missing Authentication Token"
    ),
    ("query", "malformed"): ("IncompleteSignature", 400, _INCOMPLETE),
    ("query", "unknown_key"): ("InvalidClientTokenId", 403, _INVALID_TOKEN),
    ("query", "invalid_token"): ("InvalidClientTokenId", 403, _INVALID_TOKEN),
    ("query", "signature"): ("SignatureDoesNotMatch", 403, _SIGNATURE_MISMATCH),
    ("query", "payload"): ("SignatureDoesNotMatch", 403, _SIGNATURE_MISMATCH),
    ("query", "skewed"): ("SignatureDoesNotMatch", 403, ""),
    ("query", "expired_url"): ("SignatureDoesNotMatch", 403, "Signature expired"),
    ("query", "expired_token"): ("ExpiredToken", 403, _EXPIRED_TOKEN),
    ("rest-xml", "missing"): ("AccessDenied", 403, "Access Denied"),
    ("rest-xml", "malformed"): (
        "AuthorizationHeaderMalformed", 400, "The authorization header is malformed."
    ),
    ("rest-xml", "unknown_key"): (
        "InvalidAccessKeyId",
        403,
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    ("rest-xml", "invalid_token"): (
        "InvalidToken", 400, "The provided token is malformed or otherwise invalid."
    ),
    ("rest-xml", "signature"): (
        "SignatureDoesNotMatch",
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    ("rest-xml", "payload"): (
        "XAmzContentSHA256Mismatch",
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
    ("rest-xml", "skewed"): (
        "RequestTimeTooSkewed",
        403,
        "The difference between the request time and the current time is too large.",
    ),
    ("rest-xml", "expired_url"): ("AccessDenied", 403, "Request has expired"),
    ("rest-xml", "expired_token"): ("ExpiredToken", 400, "The provided token has expired."),
}


def auth_error(protocol: str, kind: str, detail: str = "") -> ApiError:
    """The answer to an unauthenticated request, in ``protocol``'s words."""
    code, status, message = _AUTH_ERRORS[(protocol, kind)]
    if kind == "skewed" and protocol != "rest-xml":
        message = detail
    return ApiError(code, message, status)


def access_denied(
    protocol: str,
    principal_arn: str,
    action: str,
    resource: str,
    *,
    explicit: bool,
    reason: bool = True,
) -> ApiError:
    """IAM's refusal naming identity, action and resource
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html).

    ``reason=False`` leaves out the "because ..." clause, as STS does for a
    trust policy that does not let the caller assume a role.
    """
    shown = f'"{resource}"' if protocol == "rest-xml" else resource
    message = f"User: {principal_arn} is not authorized to perform: {action} on resource: {shown}"
    if explicit:
        message += " with an explicit deny in an identity-based policy"
    elif reason:
        message += f" because no identity-based policy allows the {action} action"
    if protocol == "json":
        return ApiError("AccessDeniedException", message, 400)
    return ApiError("AccessDenied", message, 403)
