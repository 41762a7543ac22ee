"""AWS's and botocore's errors reach the caller as rsauth errors that say what to do.

A missing profile, a malformed region and missing credentials are
ConfigurationErrors before any network call. AWS refusing the credentials
themselves (unknown key, bad signature, clock skew, expired session token) is
an AccessDeniedError naming which, asked once: neither botocore's standard
retries (botocore/retries/standard.py: only transient, throttling and modeled
retryable errors) nor rsauth retry it.

The codes AWS answers are checked against a real botocore client and a small
local HTTP server answering in each protocol's error shape: AWS JSON 1.1
(redshift-serverless, ``__type`` and ``X-Amzn-ErrorType``) and the query
protocol's XML (STS, ``<ErrorResponse><Error><Code>``), as the AWS API
references describe them (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html,
https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/CommonErrors.html).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import botocore.auth
import pytest
from tests._iam import make_role

import rsauth
from rsauth.sandbox import Sandbox

ROLE = "arn:aws:iam::123456789012:role/app"


# -- before any network call -----------------------------------------------------------------


def test_a_missing_profile_names_it_and_lists_those_that_exist(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-1\n\n[profile dev]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "prod")
    with pytest.raises(rsauth.ConfigurationError, match=r"'prod'.*default, dev") as caught:
        rsauth.connect(workgroup=sandbox.workgroup)
    assert "AWS_PROFILE" in str(caught.value)
    with pytest.raises(rsauth.ConfigurationError, match=r"'staging'.*default, dev"):
        rsauth.Broker(profile="staging").credentials(workgroup=sandbox.workgroup)
    assert sandbox.calls() == {}


@pytest.mark.parametrize("region", ["eu-west-1\n", "eu west 1", "-eu-west-1"])
def test_a_malformed_region_is_named(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="region") as caught:
        rsauth.connect(workgroup=sandbox.workgroup, region=region)
    assert repr(region) in str(caught.value)
    monkeypatch.setenv("AWS_REGION", region)
    with pytest.raises(rsauth.ConfigurationError, match="region"):
        rsauth.connect(workgroup=sandbox.workgroup)
    assert sandbox.calls() == {}


def test_missing_credentials(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(rsauth.ConfigurationError, match="no AWS credentials"):
        rsauth.connect(workgroup=sandbox.workgroup)
    assert sandbox.calls() == {}


# -- AWS refuses the credentials ---------------------------------------------------------------


def test_an_unknown_key_against_the_sandbox(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.connect(workgroup=sandbox.workgroup)
    message = str(caught.value)
    assert "UnrecognizedClientException" in message
    assert "access key" in message
    assert "not valid" in message
    assert "Grant" not in message
    assert sandbox.calls() == {}, "refused before any operation ran"
    assert broker.stats()["redshift-serverless.GetCredentials"] == 1


# -- AWS refusing the credentials, end to end through the sandbox, which verifies SigV4 ----
# (docs/sandbox.md, "Signatures and IAM policies").


def test_a_wrong_secret_key_against_the_sandbox(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-of-this-key-0000000000000")
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.connect(workgroup=sandbox.workgroup)
    message = str(caught.value)
    assert "InvalidSignatureException" in message
    assert "secret" in message
    assert "Grant" not in message
    assert sandbox.calls() == {}, "refused before any operation ran"
    assert broker.stats()["redshift-serverless.GetCredentials"] == 1, "asked once"


def test_a_clock_ten_minutes_off_against_the_sandbox(sandbox: Sandbox) -> None:
    sandbox.set_aws_clock_offset(600)
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.connect(workgroup=sandbox.workgroup)
    message = str(caught.value)
    assert "clock" in message
    assert "10 minutes" in message
    assert broker.stats()["redshift-serverless.GetCredentials"] == 1, "asked once"


def test_expired_session_credentials_against_the_sandbox(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = make_role("expired-session")
    session = boto3.client("sts").assume_role(
        RoleArn=role, RoleSessionName="short", DurationSeconds=900
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", session["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", session["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", session["SessionToken"])
    # The session has expired by the endpoint's clock, and botocore signs on the same
    # clock (no skew), as a long-running process holding stale keys would.
    sandbox.set_aws_clock_offset(1000)
    moment = datetime.now(timezone.utc) + timedelta(seconds=1000)
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda *a, **k: moment.replace(tzinfo=None)
    )
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.connect(workgroup=sandbox.workgroup)
    message = str(caught.value)
    assert "ExpiredToken" in message
    assert "session" in message
    assert broker.stats()["redshift-serverless.GetCredentials"] == 1, "asked once"


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request with ``server.answer`` in the protocol the request speaks."""

    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, status, message = self.server.answer
        self.server.requests += 1
        target = self.headers.get("X-Amz-Target", "")
        action = parse_qs(body.decode()).get("Action", [""])[0]
        self.server.operations[target.rpartition(".")[2] or action] += 1
        json_protocol = "json" in self.headers.get("Content-Type", "")
        if json_protocol:
            body = json.dumps({"__type": code, "message": message}).encode()
            content_type = "application/x-amz-json-1.1"
        else:
            body = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                "</Error><RequestId>0c6a7b1e-0000-4000-8000-000000000000</RequestId>"
                "</ErrorResponse>"
            ).encode()
            content_type = "text/xml"
        # send_response_only: send_response would add a second Date, the real one.
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "0c6a7b1e-0000-4000-8000-000000000000")
        if json_protocol:
            self.send_header("X-Amzn-ErrorType", code)
        self.send_header("Date", format_datetime(self.server.clock(), usegmt=True))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    answer: tuple[str, int, str]
    requests: int = 0
    offset: timedelta = timedelta(0)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # Requests per operation: a cold call asks for the login and the endpoint side by
        # side, and neither may be asked twice.
        self.operations: Counter[str] = Counter()

    def clock(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _expired_message(behind: timedelta) -> str:
    now = datetime.now(timezone.utc)
    sent = now - behind
    return (
        f"Signature expired: {_stamp(sent)} is now earlier than "
        f"{_stamp(now - timedelta(minutes=5))} ({_stamp(now)} - 5 min.)"
    )


# (code, HTTP status, AWS's message, what the error must say)
CASES = [
    ("UnrecognizedClientException", 400, "The security token included in the request is "
     "invalid.", "the access key is not valid"),
    ("InvalidClientTokenId", 403, "The security token included in the request is invalid.",
     "the access key is not valid"),
    ("InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our "
     "records.", "the access key is not valid"),
    ("InvalidSignatureException", 400, "The request signature we calculated does not match "
     "the signature you provided.", "the secret access key does not match"),
    ("SignatureDoesNotMatch", 403, "The request signature we calculated does not match the "
     "signature you provided.", "the secret access key does not match"),
    ("ExpiredToken", 400, "The security token included in the request is expired",
     "refresh the session"),
    ("ExpiredTokenException", 400, "The security token included in the request is expired",
     "refresh the session"),
]


@pytest.mark.parametrize(("code", "status", "message", "says"), CASES)
@pytest.mark.parametrize("protocol", ["json", "query"])
def test_aws_refusing_the_credentials_is_access_denied_asked_once(
    refusing: _Server, code: str, status: int, message: str, says: str, protocol: str
) -> None:
    refusing.answer = (code, status, message)
    # JSON 1.1: redshift-serverless:GetCredentials; query XML: sts:AssumeRole for role_arn=.
    role: dict[str, Any] = {"role_arn": ROLE} if protocol == "query" else {}
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.credentials(workgroup="analytics", **role)
    text = str(caught.value)
    assert says in text
    assert code in text
    assert "Grant" not in text
    assert "try again later" not in text.lower()
    # A role is assumed first (once), then nothing; without one, the login and the
    # endpoint are asked side by side, each once.
    expected = {"AssumeRole": 1} if role else {"GetCredentials": 1, "GetWorkgroup": 1}
    assert refusing.operations == expected, "retried"


@pytest.mark.parametrize("protocol", ["json", "query"])
@pytest.mark.parametrize(("code", "status"), [("InvalidSignatureException", 400),
                                             ("SignatureDoesNotMatch", 403)])
def test_a_signature_expired_says_how_far_the_clock_is_off(
    refusing: _Server, code: str, status: int, protocol: str
) -> None:
    refusing.answer = (code, status, _expired_message(timedelta(minutes=37)))
    role: dict[str, Any] = {"role_arn": ROLE} if protocol == "query" else {}
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.credentials(workgroup="analytics", **role)
    assert "clock is 37 minutes behind" in str(caught.value)
    assert max(refusing.operations.values()) == 1


def test_request_time_too_skewed_reads_the_servers_date(refusing: _Server) -> None:
    refusing.offset = timedelta(hours=2)
    refusing.answer = ("RequestTimeTooSkewed", 403, "The difference between the request time "
                       "and the current time is too large.")
    with rsauth.Broker() as broker, pytest.raises(rsauth.AccessDeniedError) as caught:
        broker.credentials(workgroup="analytics", role_arn=ROLE)
    assert "clock is 120 minutes behind" in str(caught.value)
    assert refusing.requests == 1
