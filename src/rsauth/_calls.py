"""One resolved request and the keys its cached parts are filed under.

The Broker resolves the caller's arguments once (no network) into a
:class:`Call`; the login side (``_logins``) and the connection side
(``_connections``) both read it.
"""

# No ``from __future__ import annotations`` here: with it, typing.NamedTuple compiles
# every field's annotation string into a ForwardRef when the class is made, which more
# than doubles what defining these keys costs at import. Everything annotated here
# exists at run time (on Python 3.10 too).
from typing import NamedTuple

from rsauth._config import Options
from rsauth._sources import AwsContext

__all__ = [
    "DEFAULT_DATABASE",
    "AwsSide",
    "Call",
    "CredentialKey",
    "EndpointKey",
    "SessionKey",
    "describe",
]

DEFAULT_DATABASE = "dev"


class SessionKey(NamedTuple):
    """What tells sessions apart (rsauth._sessions). Never holds a secret."""

    profile: str | None
    region: str
    role_arn: str | None
    db_roles: tuple[str, ...]


class CredentialKey(NamedTuple):
    """What tells cached logins apart. Never holds a secret: ``identity`` is an access key id."""

    identity: str
    profile: str | None
    region: str
    workgroup: str | None
    custom_domain: str | None
    database: str | None
    method: str
    duration: int
    role_arn: str | None
    db_roles: tuple[str, ...]
    secret_id: str | None
    user: str | None


class EndpointKey(NamedTuple):
    """What tells cached workgroup lookups apart (the name last, for log lines)."""

    identity: str
    profile: str | None
    region: str
    role_arn: str | None
    db_roles: tuple[str, ...]
    custom_domain: str | None
    workgroup: str


def describe(key: CredentialKey) -> str:
    """A login's cache key in words, for log lines (no secret in a key)."""
    where = (
        f"custom domain {key.custom_domain!r}"
        if key.custom_domain
        else f"workgroup {key.workgroup!r}"
        if key.workgroup
        else f"secret {key.secret_id!r}"
    )
    role = f" as {key.role_arn}" if key.role_arn else ""
    return f"{key.method} login for {where} in {key.region}{role}"


# The two records below are plain classes, never changed once made: as frozen dataclasses
# they cost about a millisecond each to define at import, as NamedTuples a third of that.
class AwsSide:
    """The AWS side of one call: who, where, and the cache keys of its login and endpoint."""

    __slots__ = ("context", "endpoint_key", "identity", "key", "region", "session_key")

    def __init__(
        self,
        identity: str,
        region: str,
        session_key: SessionKey,
        context: AwsContext,
        key: CredentialKey,
        endpoint_key: EndpointKey,
    ) -> None:
        self.identity = identity
        self.region = region
        self.session_key = session_key
        self.context = context
        self.key = key
        self.endpoint_key = endpoint_key


class Call:
    """One resolved request; ``resolved_aws`` is ``None`` only for a password login to host=."""

    __slots__ = ("options", "profile", "resolved_aws")

    def __init__(
        self, options: Options, profile: str | None, resolved_aws: AwsSide | None = None
    ) -> None:
        self.options = options
        self.profile = profile
        self.resolved_aws = resolved_aws

    @property
    def aws(self) -> AwsSide:
        assert self.resolved_aws is not None, "this call needs no AWS identity"
        return self.resolved_aws
