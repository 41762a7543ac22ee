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
