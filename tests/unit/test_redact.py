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
        # KMS GenerateDataKey / Decrypt bodies, and parsed responses' reprs.
        repr(b'{"CiphertextBlob":"AQID","KeyId":"k","Plaintext":"pw-123"}'),
        "{'Plaintext': b'pw-123\\x00\\''}",
        "{'Plaintext': b\"pw-123'\\x00\"}",
        "{'SecretBinary': b'pw-123', 'Name': 'n'}",
        "<Plaintext>pw-123</Plaintext>",
        repr(b'{"adminUserPassword":"pw-123"}'),
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


def test_everything_after_an_escaped_quote_is_masked_too() -> None:
    text = "{'Plaintext': b'ab\\'pw-123', 'KeyId': 'k'}"
    assert _redact.redact(text) == "{'Plaintext': b'[secure]', 'KeyId': 'k'}"


def test_protection_is_put_back_once_on_every_logger() -> None:
    loggers = [logging.getLogger(name) for name in _redact._LOGGERS]
    for logger in loggers:
        logger.removeFilter(_redact._FILTER)
    try:
        _redact.protect_botocore_logs()
        _redact.protect_botocore_logs()
        assert [logger.filters.count(_redact._FILTER) for logger in loggers] == [1] * len(loggers)
        assert _redact._FILTER not in logging.getLogger().filters
    finally:
        for logger in loggers:
            if _redact._FILTER not in logger.filters:
                logger.addFilter(_redact._FILTER)


def test_only_the_values_are_replaced() -> None:
    assert (
        _redact.redact("<SecretAccessKey>pw-123</SecretAccessKey>")
        == "<SecretAccessKey>[secure]</SecretAccessKey>"
    )
    assert _redact.redact("x-amz-security-token:pw-123\n") == "x-amz-security-token:[secure]\n"


def test_a_malformed_record_is_passed_on_not_dropped() -> None:
    record = logging.LogRecord("botocore.parsers", logging.DEBUG, __file__, 1, "%s %s", (1,), None)
    assert _redact.RedactSecrets().filter(record) is True
