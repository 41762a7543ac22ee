"""botocore's DEBUG records that carry credentials are masked; others pass untouched."""

from __future__ import annotations

import logging

import pytest

import rsauth  # noqa: F401  # importing rsauth puts the filter on botocore's loggers
from rsauth import _redact


@pytest.mark.parametrize(
    "text",
    [
        repr(b'{"dbPassword":"pw-123","dbUser":"IAM:alice"}'),
        repr(b'{"SecretString":"{\\"username\\":\\"admin\\",\\"password\\":\\"pw-123\\"}"}'),
        "<AssumeRoleResult><SecretAccessKey>pw-123</SecretAccessKey>"
        "<SessionToken>pw-123</SessionToken></AssumeRoleResult>",
        "headers={'X-Amz-Security-Token': b'pw-123'}",
        "x-amz-security-token:pw-123\n",
    ],
)
def test_credentials_are_masked(text: str) -> None:
    assert "pw-123" not in _redact.redact(text)


def test_other_text_is_unchanged() -> None:
    text = "Response headers: {'x-amzn-requestid': '1'}"
    assert _redact.redact(text) == text


def test_botocore_loggers_are_protected_on_import(caplog: pytest.LogCaptureFixture) -> None:
    assert _redact._FILTER in logging.getLogger("botocore.parsers").filters
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("botocore.parsers").debug("Response body:\n%r", b'{"dbPassword":"pw-9"}')
    assert "pw-9" not in caplog.text
    assert "dbPassword" in caplog.text
