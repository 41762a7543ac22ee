"""rsauth: connections to Amazon Redshift Serverless without handling passwords."""

from __future__ import annotations

import importlib as _importlib
import logging
import typing as _typing

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
from rsauth._redact import protect_botocore_logs as _protect_botocore_logs

if _typing.TYPE_CHECKING:
    from rsauth._fleet import RedisCache

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


# Public names whose modules load on first use (fleet mode: a process that never shares
# a cache never imports it), and the module each comes from.
_LAZY = {"RedisCache": "rsauth._fleet"}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rsauth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


logging.getLogger(__name__).addHandler(logging.NullHandler())
_protect_botocore_logs()
