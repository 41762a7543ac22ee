"""Errors raised by rsauth.

Every error rsauth raises derives from one root::

    RsauthError
    ├── ConfigurationError (also ValueError)  malformed input or missing AWS credentials,
    │                                          raised before any network call
    ├── AccessDeniedError                     AWS or the database said no to this identity
    │   └── NotSuperuserError                 method="superuser" reached a user that is not one
    ├── NotFoundError                         a well-formed workgroup, namespace or secret
    │                                          that does not exist in that region
    ├── ServiceError                          AWS still failing after botocore's retries
    │                                          (throttling, 5xx, timeouts), or a workgroup
    │                                          that is not AVAILABLE
    ├── AuthenticationError                   the database refused the login, also after a
    │                                          fresh credential was tried
    ├── ConnectError                          network or TLS failure reaching the database
    └── LoadError                             rsauth.etl: Redshift refused or aborted a COPY
        │                                      or UNLOAD (its message, SQLSTATE and detail)
        └── IamRoleError                      the statement's IAM role is not usable by the
                                               namespace: no default role, not associated,
                                               or a chain that breaks (checked before running,
                                               or as Redshift reported it)

AWS and driver exceptions never escape raw: each is mapped to the most specific
class above with ``raise ... from exc``, so the original stays in ``__cause__``.
Messages say what was asked, what happened and what to do; they never contain a
password, a secret string or a session token.

Messages speak the caller's language. They name rsauth's options as Python
keywords (``role_arn=``, ``method='secret'``) and wrap advice only a Python
caller can follow in :func:`python_only`; ``str(error)`` reads as Python, and
:meth:`RsauthError.in_cli` renders the same message for the ``rsauth``
command: each keyword the command has a flag for as that flag (``--role-arn``,
``--method secret``), the Python-only advice left out.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "IamRoleError",
    "LoadError",
    "NotFoundError",
    "NotSuperuserError",
    "RsauthError",
    "ServiceError",
    "in_cli",
    "in_python",
    "python_only",
]


# Shift-out / shift-in around advice for Python callers only; never in user input.
_PY_OPEN, _PY_CLOSE = "\x0e", "\x0f"
# Both patterns are for the command line's wording (in_cli): compiled there, on first use
# (re's cache), not at import.
_PYTHON_ONLY = f"{_PY_OPEN}[^{_PY_CLOSE}]*{_PY_CLOSE}"
# A keyword named in a message: ``name=`` then a quoted value, a bare value or nothing.
_KEYWORD = r"(?<![\w\-(])([a-z][a-z0-9_]*)=('[^']*'|[\w./:-]+)?"


def python_only(text: str) -> str:
    """Marks ``text`` as advice a Python caller can follow and a CLI user cannot."""
    return f"{_PY_OPEN}{text}{_PY_CLOSE}"


def in_python(message: str) -> str:
    """``message`` for a Python caller: keywords as written, Python-only advice kept."""
    return message.replace(_PY_OPEN, "").replace(_PY_CLOSE, "")


def in_cli(message: str, flags: Collection[str]) -> str:
    """``message`` for the command line: ``name=`` as ``--name`` where ``flags`` (the
    command's options, like ``--role-arn``) has it, Python-only advice left out."""

    def flag(match: re.Match[str]) -> str:
        option = "--" + match.group(1).replace("_", "-")
        if option not in flags:
            return match.group(0)
        value = match.group(2)
        if value and value.startswith("'") and not re.search(r"\s", value):
            value = value.strip("'")
        return f"{option} {value}" if value else option

    return re.sub(_KEYWORD, flag, re.sub(_PYTHON_ONLY, "", message))


class RsauthError(Exception):
    """Root of every error rsauth raises."""

    def __str__(self) -> str:
        return in_python(super().__str__())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def in_cli(self, flags: Collection[str]) -> str:
        """The message for the ``rsauth`` command (see the module docstring)."""
        return in_cli(super().__str__(), flags)


class ConfigurationError(RsauthError, ValueError):
    """Malformed input or missing AWS credentials, found before any network call."""


class AccessDeniedError(RsauthError):
    """AWS or the database refused this identity the action it needs."""


class NotSuperuserError(AccessDeniedError):
    """``method="superuser"`` logged in as a database user that is not a superuser."""


class NotFoundError(RsauthError):
    """A well-formed workgroup, namespace or secret that does not exist in that region."""


class ServiceError(RsauthError):
    """AWS kept failing after botocore's retries, or the workgroup is not AVAILABLE."""


class AuthenticationError(RsauthError):
    """The database refused the login, also with a freshly fetched credential."""


class ConnectError(RsauthError):
    """The database endpoint could not be reached (network, TLS)."""


class LoadError(RsauthError):
    """A COPY or UNLOAD failed in the database (``rsauth.etl``)."""


class IamRoleError(LoadError):
    """The IAM role of a COPY or UNLOAD cannot be used by the workgroup's namespace."""
