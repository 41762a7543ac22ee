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
"""

from __future__ import annotations

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
]


class RsauthError(Exception):
    """Root of every error rsauth raises."""


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
