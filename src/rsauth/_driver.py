"""Everything rsauth knows about ``redshift_connector``.

- which keywords ``redshift_connector.connect`` takes (checked before any AWS call),
- the TLS defaults (``ssl=True, sslmode="verify-full"``) and the CA file it trusts,
- how to read its errors: a refused login carries the server's error fields as
  a dict in ``args[0]`` (``"C"`` is the SQLSTATE); a network failure carries
  the ``OSError`` or is one.
"""

from __future__ import annotations

import inspect
import logging
import os
import ssl
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import redshift_connector
from redshift_connector.error import (
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from rsauth._errors import ConfigurationError

__all__ = [
    "DRIVER_CA_BUNDLE",
    "DRIVER_PARAMETERS",
    "LOGIN_REFUSED",
    "REFUSAL_TEXTS",
    "check_driver_kwargs",
    "is_login_refused",
    "is_tls_failure",
    "is_transient",
    "server_error",
    "trusted_ca_file",
    "with_tls",
]

logger = logging.getLogger("rsauth")


def _parameter_names(function: Any) -> frozenset[str]:
    """The names of ``function``'s parameters. Read off its code object when that says it
    all (inspect.signature costs a fifth of a millisecond at import for the driver's 66
    parameters); a wrapped function, or one with ``*args``/``**kwargs``, by signature."""
    code = getattr(function, "__code__", None)
    if (
        code is None
        or hasattr(function, "__wrapped__")
        or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    ):
        return frozenset(inspect.signature(function).parameters)
    return frozenset(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])


DRIVER_PARAMETERS = _parameter_names(redshift_connector.connect)

# The Redshift CA bundle (Amazon's roots) redshift_connector loads on every TLS connection,
# besides the default trust store (redshift_connector/core.py, Connection.__init__).
DRIVER_CA_BUNDLE = Path(redshift_connector.__file__).parent / "files" / "redshift-ca-bundle.crt"

# SQLSTATE invalid_authorization_specification and invalid_password. Redshift answers a
# wrong password with 28000 ("FATAL: password authentication failed for user ...",
# "Server SQLState: 28000": github.com/aws/amazon-redshift-jdbc-driver/issues/21).
LOGIN_REFUSED = frozenset({"28000", "28P01"})

# What Redshift says when it refuses a temporary password, whatever SQLSTATE comes with
# it: an expired one reads "FATAL: IAM Authentication token has expired"
# (github.com/aws/amazon-redshift-jdbc-driver/issues/97,
# github.com/open-metadata/OpenMetadata/issues/30541), where no source shows the
# SQLSTATE; a wrong or revoked one reads "password authentication failed for user".
# Both are recovered like 28000: a fresh login, one retry.
REFUSAL_TEXTS = ("iam authentication token has expired", "password authentication failed")

# The driver's own IAM and identity-provider login; rsauth does the login itself.
_DRIVER_LOGIN = DRIVER_PARAMETERS & {
    "access_key_id",
    "auth_profile",
    "auto_create",
    "cluster_identifier",
    "credentials_provider",
    "db_groups",
    "db_user",
    "group_federation",
    "iam",
    "iam_disable_cache",
    "is_serverless",
    "serverless_acct_id",
    "serverless_work_group",
    "secret_access_key",
    "session_token",
}

# Messages of driver errors raised when the server closed the socket under it.
_CLOSED_MESSAGES = ("BrokenPipe", "connection is closed")


def check_driver_kwargs(
    kwargs: Mapping[str, Any], known_options: Iterable[str] = ()
) -> dict[str, Any]:
    """``kwargs`` for ``redshift_connector.connect``; a bad keyword is a ConfigurationError."""
    for name in kwargs:
        if name in _DRIVER_LOGIN:
            raise ConfigurationError(
                f"{name}= is redshift_connector's own IAM login; rsauth logs in itself: "
                "use method=, role_arn=, db_roles= or profile= instead"
            )
        if name not in DRIVER_PARAMETERS:
            candidates = sorted(DRIVER_PARAMETERS | set(known_options))
            import difflib  # only to suggest a name for a typo

            close = difflib.get_close_matches(name, candidates, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigurationError(
                f"unknown keyword {name!r}: neither an rsauth option nor a parameter of "
                f"redshift_connector.connect{hint}"
            )
    return dict(kwargs)


def calling_module() -> str:
    """The first module on the stack outside rsauth (``""`` if none).

    redshift_connector names a connection's ``application_name`` after the
    module that called it, found with ``inspect.stack()``, which reads source
    files and costs about a millisecond per connect; through rsauth it would
    also name an rsauth module. Passing this name instead keeps the driver's
    meaning and skips that cost.
    """
    frame = sys._getframe(1)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name != "rsauth" and not name.startswith("rsauth."):
            return name
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def with_tls(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with TLS on and ``sslmode="verify-full"`` unless the caller chose otherwise."""
    result = dict(kwargs)
    result.setdefault("ssl", True)
    result.setdefault("sslmode", "verify-full")
    if result["ssl"] is not True:
        logger.warning(
            "TLS is off (ssl=%r, as asked): the login travels unencrypted", result["ssl"]
        )
    elif result["sslmode"] != "verify-full":
        logger.warning(
            "sslmode=%r (as asked) does not check the server's host name; "
            "verify-full is the safe default",
            result["sslmode"],
        )
    if result.get("ssl_insecure"):
        logger.warning("ssl_insecure=True (as asked): the server certificate is not verified")
    return result


def trusted_ca_file(environ: Mapping[str, str] | None = None) -> str:
    """The CA file a libpq client should verify the endpoint with: the one the driver trusts.

    ``SSL_CERT_FILE`` when set (the default store redshift_connector loads),
    else the Redshift bundle it ships. libpq has no default root, so
    ``sslmode=verify-full`` without ``sslrootcert`` fails in every client.
    """
    env = os.environ if environ is None else environ
    return env.get("SSL_CERT_FILE") or str(DRIVER_CA_BUNDLE)


def server_error(exc: BaseException) -> Mapping[str, str] | None:
    """The server's error fields (``"C"``: SQLSTATE, ``"M"``: message) a driver error carries."""
    if isinstance(exc, Error) and exc.args and isinstance(exc.args[0], dict):
        fields: Mapping[str, str] = exc.args[0]
        return fields
    return None


def is_login_refused(exc: BaseException) -> bool:
    """The database refused the login (SQLSTATE 28000 or 28P01, or a refusal's words)."""
    fields = server_error(exc)
    if fields is None or not isinstance(exc, InterfaceError | ProgrammingError):
        return False
    if fields.get("C") in LOGIN_REFUSED:
        return True
    message = fields.get("M", "").lower()
    return any(text in message for text in REFUSAL_TEXTS)


def is_tls_failure(exc: BaseException) -> bool:
    """A TLS failure (bad certificate, wrong host name): retrying would not help."""
    return any(isinstance(part, ssl.SSLError) for part in _parts(exc))


def is_transient(exc: BaseException) -> bool:
    """A network failure worth retrying: no server answer, not a TLS failure."""
    if server_error(exc) is not None or is_tls_failure(exc):
        return False
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, InterfaceError | OperationalError):
        if any(isinstance(part, OSError) for part in _parts(exc)):
            return True
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        return message.startswith(_CLOSED_MESSAGES)
    return False


def _parts(exc: BaseException) -> list[object]:
    return [exc, *exc.args, exc.__cause__, exc.__context__]
