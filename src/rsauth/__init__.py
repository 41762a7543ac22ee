"""rsauth: connections to Amazon Redshift Serverless without handling passwords."""

from __future__ import annotations

import logging

from rsauth._api import connect, connect_async, get_credentials, get_credentials_async
from rsauth._broker import Broker
from rsauth._credentials import Credentials
from rsauth._errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    IamRoleError,
    LoadError,
    NotFoundError,
    NotSuperuserError,
    RsauthError,
    ServiceError,
)
from rsauth._fleet import RedisCache
from rsauth._redact import protect_botocore_logs as _protect_botocore_logs

__version__ = "0.1.0.dev0"
"""The installed version of rsauth."""

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "Broker",
    "ConfigurationError",
    "ConnectError",
    "Credentials",
    "IamRoleError",
    "LoadError",
    "NotFoundError",
    "NotSuperuserError",
    "RedisCache",
    "RsauthError",
    "ServiceError",
    "__version__",
    "connect",
    "connect_async",
    "get_credentials",
    "get_credentials_async",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
_protect_botocore_logs()
