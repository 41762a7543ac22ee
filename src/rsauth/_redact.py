"""Keep secrets out of botocore's DEBUG log lines.

At DEBUG, botocore logs whole response bodies (``botocore.parsers``: the
``dbPassword`` of GetCredentials, the ``SecretString`` of GetSecretValue, the
keys of AssumeRole, the ``Plaintext`` data key of KMS GenerateDataKey and
Decrypt), request parameters and prepared requests with their headers
(``botocore.endpoint``) and canonical requests with the session token
(``botocore.auth``). rsauth puts a filter on
those loggers when it is imported, so turning on DEBUG logging to find out why
a login fails never writes a password into a log file.
"""

from __future__ import annotations

import functools
import logging
import re

MASK = "[secure]"

# Names of the fields whose values are masked: the members of the shapes marked
# "sensitive" that rsauth's calls return (botocore/data/kms/2014-11-01/service-2.json
# PlaintextType; secretsmanager/2017-10-17 SecretStringType, SecretBinaryType,
# RandomPasswordType; redshift-serverless/2021-04-21 DbPassword and the namespace's
# adminUserPassword; sts/2011-06-15 accessKeySecretType), STS's SessionToken, and
# the names secrets go by in rsauth's own settings.
_MASKED_FIELDS = (
    "dbPassword|DbPassword|SecretString|SecretBinary|SecretAccessKey|SessionToken"
    "|Plaintext|PrivateKeyPlaintext|RandomPassword|adminUserPassword"
    "|password|Password|aws_secret_access_key|aws_session_token"
)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], ...]:
    """The patterns, compiled when a botocore DEBUG line is first written (never, mostly)."""
    return (
        # 'key': b'value' or b"value" (a parsed response's repr): escapes inside are skipped.
        re.compile(
            rf"""(['"](?:{_MASKED_FIELDS})['"]\s*:\s*b(['"]))((?:\\.|(?!\2)[^\\])*)(\2)"""
        ),
        # "key": "value" and 'key': 'value', also inside escaped JSON (\"key\": \"value\").
        re.compile(rf'(\\*"(?:{_MASKED_FIELDS})\\*"\s*:\s*\\*")(.*?)(\\*")'),
        re.compile(rf"(\\*'(?:{_MASKED_FIELDS})\\*'\s*:\s*\\*')(.*?)(\\*')"),
        re.compile(
            r"(<(SecretAccessKey|SessionToken|SecretString|Plaintext)>)(.*?)(</\2>)", re.DOTALL
        ),
        re.compile(
            r"((?:x-amz-security-token|X-Amz-Security-Token)['\"]?\s*[:=,]\s*b?['\"]?)"
            r"([^\s'\",}]+)"
        ),
    )


_LOGGERS = (
    "botocore.auth",
    "botocore.client",
    "botocore.endpoint",
    "botocore.hooks",
    "botocore.parsers",
    "botocore.awsrequest",
)


def redact(text: str) -> str:
    """``text`` with the values of secret fields replaced by ``[secure]``."""
    as_bytes, double_quoted, single_quoted, xml, header = _patterns()
    text = as_bytes.sub(lambda m: f"{m.group(1)}{MASK}{m.group(4)}", text)
    for pattern in (double_quoted, single_quoted):
        text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = xml.sub(lambda m: f"{m.group(1)}{MASK}{m.group(4)}", text)
    return header.sub(lambda m: f"{m.group(1)}{MASK}", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message carries a secret field; never drops records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecrets()


def protect_botocore_logs() -> None:
    """Attach the filter to botocore's talkative loggers (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
