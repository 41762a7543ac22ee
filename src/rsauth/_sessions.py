"""boto3 sessions and clients, made once and shared.

One session per ``(profile, region, role_arn, db_roles)`` and one client per
service per session, created lazily. Without ``role_arn`` the session is the
base session of the profile and only the client carries the region. With
``role_arn`` the session gets its own botocore session whose only credential
provider is botocore's refreshable assume-role credentials
(``AssumeRoleCredentialFetcher`` + ``DeferredRefreshableCredentials``): STS is
called on first use and again before the role credentials expire, by botocore,
with the ``RedshiftDbRoles`` session tag when ``db_roles`` is given.

Clients use botocore's ``standard`` retry mode: throttling and 5xx are retried
there and nowhere else in rsauth.

At interpreter exit the sessions and clients rsauth holds are released (clients
closed, references dropped) before the interpreter tears itself down: what a
boto3 session keeps (botocore's parsed ``endpoints.json`` and service models,
tens of thousands of objects) is otherwise walked by every garbage collection
of the teardown, which made a short process that used rsauth exit tens of
milliseconds later than one that did not. Anything that still asks for a client
afterwards (an ``atexit`` handler registered before ``import rsauth``) gets a
new one.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ProfileNotFound

from rsauth._calls import SessionKey  # defined with the other keys
from rsauth._config import checked_region
from rsauth._errors import ConfigurationError, python_only

if TYPE_CHECKING:
    from mypy_boto3_redshift_serverless import RedshiftServerlessClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sts import STSClient

__all__ = ["DB_ROLES_TAG", "SessionKey", "Sessions", "default_config"]

DB_ROLES_TAG = "RedshiftDbRoles"


def default_config() -> Config:
    """Client configuration: botocore's standard retries, bounded timeouts."""
    return Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=30,
        user_agent_extra="rsauth",
    )


def _no_such_profile(profile: str | None, exc: ProfileNotFound) -> ConfigurationError:
    name = exc.kwargs.get("profile", profile)
    if profile is not None:
        given = f"profile={name!r}"
    else:
        source = "AWS_PROFILE" if os.environ.get("AWS_PROFILE") else "AWS_DEFAULT_PROFILE"
        given = f"{source}={name!r} (from the environment)"
    # A plain botocore session lists the profiles without loading the missing one.
    existing = botocore.session.Session().available_profiles
    return ConfigurationError(
        f"{given}: no such profile in the AWS config files; accepted: "
        f"{', '.join(existing) or 'none (no profile is configured)'}"
    )


class _AssumeRoleProvider(CredentialProvider):
    """The one link of a role session's credential chain: refreshable assume-role credentials."""

    METHOD = "rsauth-assume-role"
    CANONICAL_NAME = "rsauth-assume-role"

    def __init__(self, fetcher: AssumeRoleCredentialFetcher) -> None:
        super().__init__()
        self._fetcher = fetcher
        # Set once STS has answered: calls made side by side then share what it gave.
        self.assumed = False

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(refresh_using=self._fetch, method=self.METHOD)

    def _fetch(self) -> Any:
        credentials = self._fetcher.fetch_credentials()
        self.assumed = True
        return credentials


class Sessions:
    """Sessions and clients per key; safe to share between threads."""

    def __init__(
        self,
        base: boto3.Session | None,
        *,
        config: Config | None = None,
        on_call: Callable[[str], None] | None = None,
        on_error: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self._base = base
        self._config = config if config is not None else default_config()
        self._on_call = on_call
        self._on_error = on_error
        # boto3 sessions are not thread-safe while making clients; creation is
        # local work (no network), so one lock for all keys is short.
        self._lock = threading.Lock()
        self._profiles: dict[str | None, boto3.Session] = {}
        self._sessions: dict[SessionKey, boto3.Session] = {}
        self._providers: dict[SessionKey, _AssumeRoleProvider] = {}
        self._clients: dict[tuple[SessionKey, str], Any] = {}
        _LIVE.add(self)

    # -- sessions ---------------------------------------------------------

    def profile_session(self, profile: str | None) -> boto3.Session:
        """The base session of ``profile`` (``None``: the Broker's or the environment's)."""
        with self._lock:
            return self._profile_session(profile)

    def _profile_session(self, profile: str | None) -> boto3.Session:
        session = self._profiles.get(profile)
        if session is None:
            try:
                if profile is None:
                    session = self._base if self._base is not None else boto3.Session()
                else:
                    session = boto3.Session(profile_name=profile)
            except ProfileNotFound as exc:
                raise _no_such_profile(profile, exc) from exc
            self._profiles[profile] = session
        return session

    def identity(self, profile: str | None) -> str:
        """The access key id of ``profile``'s credentials (public, not a secret).

        Raises :class:`ConfigurationError` when there are no AWS credentials,
        before any call is made with them.
        """
        session = self.profile_session(profile)
        try:
            credentials = session.get_credentials()
        except BotoCoreError as exc:
            raise ConfigurationError(
                f"could not load AWS credentials for profile {profile or 'default'!r}: {exc}"
            ) from exc
        if credentials is None:
            raise ConfigurationError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                f"AWS_PROFILE, pass profile={python_only(' or Broker(session=)')}, or run "
                "where an instance or container role is available"
            )
        access_key = credentials.get_frozen_credentials().access_key
        return access_key or "anonymous"

    def credentials_at_hand(self, key: SessionKey) -> bool:
        """Whether calls of ``key``'s session can be signed without asking AWS first: always
        for a profile's session, once the role is assumed for a role's. Calls made side by
        side before that would each ask STS when it refuses."""
        if key.role_arn is None:
            return True
        with self._lock:
            provider = self._providers.get(key)
        return provider is not None and provider.assumed

    def session(self, key: SessionKey) -> boto3.Session:
        with self._lock:
            return self._session(key)

    def _session(self, key: SessionKey) -> boto3.Session:
        if key.role_arn is None:
            return self._profile_session(key.profile)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._role_session(key)
        return session

    def _role_session(self, key: SessionKey) -> boto3.Session:
        assert key.role_arn is not None
        source = self._profile_session(key.profile)
        source_credentials = source.get_credentials()
        if source_credentials is None:
            raise ConfigurationError(
                f"no AWS credentials found to assume role_arn={key.role_arn!r} with"
            )
        extra_args: dict[str, Any] = {
            "RoleSessionName": f"rsauth-{os.getpid()}-{int(time.time())}",
        }
        if key.db_roles:
            extra_args["Tags"] = [{"Key": DB_ROLES_TAG, "Value": ":".join(key.db_roles)}]
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=functools.partial(self._sts_for_fetcher, source, key.region),
            source_credentials=source_credentials,
            role_arn=key.role_arn,
            extra_args=extra_args,
        )
        provider = self._providers[key] = _AssumeRoleProvider(fetcher)
        core = botocore.session.Session()
        core.register_component("credential_provider", CredentialResolver([provider]))
        return boto3.Session(botocore_session=core, region_name=key.region)

    def _sts_for_fetcher(
        self, source: boto3.Session, region: str, service: str, **kwargs: Any
    ) -> Any:
        # Called by botocore on each role refresh, with the source credentials as kwargs.
        client = self._new_client(source, service, region, **kwargs)
        return client

    # -- clients ----------------------------------------------------------

    def _client(self, key: SessionKey, service: str) -> Any:
        with self._lock:
            client = self._clients.get((key, service))
            if client is None:
                session = self._session(key)
                client = self._new_client(session, service, key.region)
                self._clients[(key, service)] = client
            return client

    def _new_client(self, session: Any, service: str, region: str, **kwargs: Any) -> Any:
        checked_region("region", region)
        # Typed as Any: the service name is a variable, the stubs overload on literals.
        client = session.client(service, region_name=region, config=self._config, **kwargs)
        self._hook(client)
        return client

    def _hook(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        on_call, on_error = self._on_call, self._on_error
        if on_call is not None:

            def count(model: Any, **_: Any) -> None:
                on_call(f"{service}.{model.name}")

            # provide-client-params reaches every handler once per API call; before-call
            # stops at the first handler that answers (a stub, a cache), so it can miss calls.
            client.meta.events.register("provide-client-params", count)
        if on_error is not None:
            region = client.meta.region_name or ""

            def answered(http_response: Any, parsed: Any, model: Any, context: Any,
                         **_: Any) -> None:
                # Once per API call, after botocore's retries; an error when the status is
                # 300 or more, its code as the client raises it (botocore/client.py,
                # BaseClient._make_api_call).
                if getattr(http_response, "status_code", 200) >= 300:
                    code = (context or {}).get("error_code_override") or (
                        (parsed or {}).get("Error", {}).get("Code")
                    )
                    on_error(f"{service}.{model.name}", str(code or http_response.status_code),
                             region)

            def unanswered(exception: Exception, event_name: str, **_: Any) -> None:
                # No answer at all (network, timeout), after botocore's retries
                # (BaseClient._make_request); the event's last part is the operation.
                on_error(f"{service}.{event_name.rsplit('.', 1)[-1]}",
                         type(exception).__name__, region)

            client.meta.events.register("after-call", answered)
            client.meta.events.register("after-call-error", unanswered)

    def redshift_serverless(self, key: SessionKey) -> RedshiftServerlessClient:
        client: RedshiftServerlessClient = self._client(key, "redshift-serverless")
        return client

    def secretsmanager(self, key: SessionKey) -> SecretsManagerClient:
        client: SecretsManagerClient = self._client(key, "secretsmanager")
        return client

    def sts(self, key: SessionKey) -> STSClient:
        client: STSClient = self._client(key, "sts")
        return client

    def kms(self, key: SessionKey) -> Any:
        """The KMS client of the session (fleet mode's per-identity data keys)."""
        return self._client(key, "kms")

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Close every client and forget every session; the next call makes new ones."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._sessions.clear()
            self._providers.clear()
            self._profiles.clear()
        for client in clients:
            client.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget everything without closing the parent's sockets."""
        self._lock = threading.Lock()
        self._clients = {}
        self._sessions = {}
        self._providers = {}
        self._profiles = {}


# Every Sessions not yet garbage, released at exit (see the module's docstring).
_LIVE: weakref.WeakSet[Sessions] = weakref.WeakSet()


@atexit.register
def _release_at_exit() -> None:
    # BaseClient.close "closes underlying endpoint connections" (botocore/client.py):
    # the pooled HTTPS connections; dropping the sessions frees the rest.
    for sessions in list(_LIVE):
        with contextlib.suppress(Exception):  # exiting: a client that fails to close is moot
            sessions.close()
