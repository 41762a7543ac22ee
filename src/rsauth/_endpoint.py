"""Where to connect: a workgroup's endpoint from ``GetWorkgroup``, cached.

A custom domain names the host but not the port: its workgroup is found with
``ListCustomDomainAssociations`` (``GetCustomDomainAssociation`` needs the
workgroup's name, which the caller does not have), then ``GetWorkgroup`` gives
the port; the pair is cached like an endpoint.

A lookup is kept for ``ttl`` seconds (one hour by default) and then refreshed
in the background of the next call, like any advisory refresh; the broker
drops it when connecting to that address fails at the network level. A
workgroup that is neither ``AVAILABLE`` nor ``MODIFYING`` (``CREATING``,
``DELETING``) is a :class:`ServiceError` and is not cached, so the next call
asks again. A ``MODIFYING`` workgroup with an endpoint is connected to, whether
or not its endpoint was cached (see ``SERVING``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from rsauth._aws import map_aws_error
from rsauth._cache import Lease, RefreshCache
from rsauth._errors import NotFoundError, ServiceError
from rsauth._sources import AwsContext

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient

    from rsauth._roles import NamespaceRoles

__all__ = [
    "DEFAULT_PORT",
    "Endpoints",
    "Workgroup",
    "find_custom_domain",
    "get_namespace",
]

DEFAULT_PORT = 5439


class Workgroup:
    """What ``GetWorkgroup`` says about one workgroup; never changed once made. (A plain
    class: a frozen dataclass costs most of a millisecond to define at import.)"""

    __slots__ = ("address", "name", "namespace", "port", "status")

    def __init__(self, *, name: str, namespace: str, address: str, port: int, status: str) -> None:
        self.name = name
        self.namespace = namespace
        self.address = address
        self.port = port
        self.status = status


class Endpoints:
    """Cached ``GetWorkgroup`` lookups, one fetch at a time per key."""

    def __init__(self, *, clock: Callable[[], datetime], ttl: float = 3600.0) -> None:
        self._ttl = ttl
        self._cache: RefreshCache[Hashable, Workgroup] = RefreshCache(
            "endpoint", clock=clock, describe=_describe
        )
        self._secrets: RefreshCache[Hashable, str] = RefreshCache(
            "admin secret", clock=clock, describe=_describe
        )
        self._roles: RefreshCache[Hashable, NamespaceRoles] = RefreshCache(
            "namespace roles", clock=clock, describe=_describe
        )

    def workgroup(
        self,
        key: Hashable,
        client: Callable[[], RedshiftServerlessClient],
        name: str,
        context: AwsContext,
    ) -> Workgroup:
        """The workgroup ``name``; ``key`` must end with the name and hold no secret.

        ``client`` is called only to fetch (a cache hit needs no client)."""
        return self._cache.get(
            key, lambda: Lease(_get_workgroup(client(), name, context), refresh_after=self._ttl)
        )

    def custom_domain(
        self,
        key: Hashable,
        client: Callable[[], RedshiftServerlessClient],
        domain: str,
        context: AwsContext,
    ) -> Workgroup:
        """The workgroup ``domain`` is associated with; ``key`` must name the domain and hold
        no secret. ``client`` is called only to fetch."""
        return self._cache.get(
            key,
            lambda: Lease(find_custom_domain(client(), domain, context), refresh_after=self._ttl),
        )

    def admin_secret_arn(self, key: Hashable, fetch: Callable[[], str]) -> str:
        """The namespace's admin secret ARN for ``key``, looked up through ``fetch`` when due."""
        return self._secrets.get(key, lambda: Lease(fetch(), refresh_after=self._ttl))

    def namespace_roles(
        self, key: Hashable, fetch: Callable[[], NamespaceRoles], *, fresh: bool = False
    ) -> NamespaceRoles:
        """The namespace's IAM roles for ``key``, looked up through ``fetch`` when due
        (``fresh``: now, whatever is cached)."""
        if fresh:
            self._roles.discard(key)
        return self._roles.get(key, lambda: Lease(fetch(), refresh_after=self._ttl))

    @property
    def generation(self) -> int:
        """Moves whenever a workgroup or custom domain lookup is stored or dropped."""
        return self._cache.generation

    def fresh_until(self, key: Hashable) -> float | None:
        """Until when the lookup for ``key`` is served without a refresh (None: not cached)."""
        return self._cache.fresh_until(key)

    def has(self, key: Hashable) -> bool:
        """Whether a lookup for ``key`` is cached (fresh or due for its refresh)."""
        return self._cache.peek(key) is not None

    def discard(self, key: Hashable) -> None:
        self._cache.discard(key)

    def invalidate(self, predicate: Callable[[Hashable], bool] | None = None) -> int:
        return (
            self._cache.invalidate(predicate)
            + self._secrets.invalidate(predicate)
            + self._roles.invalidate(predicate)
        )

    def reset(self) -> None:
        self._cache.reset()
        self._secrets.reset()
        self._roles.reset()


def _describe(key: Hashable) -> str:
    domain = getattr(key, "custom_domain", None)
    if domain:
        return f"custom domain {domain!r}"
    name = key[-1] if isinstance(key, tuple) and key else key
    return f"workgroup {name!r}"


_T = TypeVar("_T")


def _asking(context: AwsContext, operation: str, subject: str, call: Callable[[], _T]) -> _T:
    """``call()``, one redshift-serverless operation about ``subject``, with AWS's errors
    mapped to rsauth's."""
    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        raise map_aws_error(
            exc,
            doing=f"redshift-serverless:{operation}",
            subject=subject,
            region=context.region,
            identity=context.identity,
        ) from exc


def find_custom_domain(
    client: RedshiftServerlessClient, domain: str, context: AwsContext
) -> Workgroup:
    """The workgroup ``domain`` is associated with (``ListCustomDomainAssociations``, then
    ``GetWorkgroup``); AWS errors mapped to rsauth's."""
    # botocore/data/redshift-serverless/2021-04-21/service-2.json: ListCustomDomainAssociations
    # filters by customDomainName and answers {workgroupName, customDomainName, ...} entries.
    response = _asking(
        context,
        "ListCustomDomainAssociations",
        f"custom domain {domain!r}",
        lambda: client.list_custom_domain_associations(customDomainName=domain),
    )
    names = [
        entry["workgroupName"]
        for entry in response.get("associations") or []
        if entry.get("customDomainName", "").lower() == domain.lower()
        and entry.get("workgroupName")
    ]
    if not names:
        raise NotFoundError(
            f"custom domain {domain!r} is not associated with any workgroup in "
            f"{context.region}; check the name and the region"
        )
    return _get_workgroup(client, names[0], context)


# The states in which a workgroup with an endpoint is connected to. MODIFYING is one:
# UpdateWorkgroup changes the settings of a running workgroup (capacity, parameters,
# network; https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_UpdateWorkgroup.html),
# AWS applies Serverless updates with "no interruption for existing connection or query
# execution" and new connections "always connect"
# (https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-known-issues.html), and
# nothing in the API reference says a MODIFYING workgroup refuses connections. Refusing
# it only when the endpoint was not cached made the answer depend on cache state; a
# change that does move the endpoint (port, network) fails the connect at the network
# level, which drops the cached lookup and asks GetWorkgroup again.
# Status values: botocore/data/redshift-serverless/2021-04-21/service-2.json, WorkgroupStatus.
SERVING: Final = frozenset({"AVAILABLE", "MODIFYING"})


def _get_workgroup(client: RedshiftServerlessClient, name: str, context: AwsContext) -> Workgroup:
    response = _asking(
        context, "GetWorkgroup", f"workgroup {name!r}",
        lambda: client.get_workgroup(workgroupName=name),
    )
    workgroup = response["workgroup"]
    status = workgroup.get("status", "")
    if status not in SERVING:
        raise ServiceError(
            f"workgroup {name!r} in {context.region} is {status or 'in an unknown state'}, "
            "not AVAILABLE; wait until it is available and try again"
        )
    endpoint = workgroup.get("endpoint") or {}
    address = endpoint.get("address")
    if not address:
        raise ServiceError(f"workgroup {name!r} in {context.region} has no endpoint address yet")
    return Workgroup(
        name=name,
        namespace=workgroup.get("namespaceName", ""),
        address=address,
        port=int(endpoint.get("port") or workgroup.get("port") or DEFAULT_PORT),
        status=status,
    )


def get_namespace(
    client: RedshiftServerlessClient, *, namespace: str, context: AwsContext
) -> Mapping[str, Any]:
    """``GetNamespace``'s description of ``namespace``, AWS errors mapped to rsauth's."""
    response = _asking(
        context, "GetNamespace", f"namespace {namespace!r}",
        lambda: client.get_namespace(namespaceName=namespace),
    )
    facts: Mapping[str, Any] = response["namespace"]
    return facts
