"""The Broker end to end with stubbed AWS (botocore Stubber) and a fake driver: no network."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import boto3
import pytest
import redshift_connector
from botocore.stub import Stubber
from redshift_connector.error import InterfaceError

import rsauth
import rsauth._broker
from rsauth import (
    AccessDeniedError,
    AuthenticationError,
    Broker,
    ConfigurationError,
    ConnectError,
    NotFoundError,
    NotSuperuserError,
    ServiceError,
)
from rsauth._broker import connection_origin
from rsauth._sessions import SessionKey

from .conftest import FakeClock

REGION = "us-east-1"


def keyed_session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="AKIDUNITTEST",
        aws_secret_access_key="SECRET-ACCESS-KEY-VALUE",
        aws_session_token="SESSION-TOKEN-VALUE",
    )


ENDPOINT = "analytics.123456789012.us-east-1.redshift-serverless.amazonaws.com"
NAMESPACE_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:redshift!ns-admin-AbCdEf"
SECRET_VALUES = ("SECRET-ACCESS-KEY-VALUE", "SESSION-TOKEN-VALUE")


class FakeCursor:
    def __init__(self, connection: FakeConnection) -> None:
        self._connection = connection

    def execute(self, sql: str) -> None:
        self._connection.queries.append(sql)

    def fetchone(self) -> tuple[bool]:
        return (self._connection.superuser,)

    def close(self) -> None:
        pass


class FakeConnection:
    def __init__(self, kwargs: dict[str, Any], superuser: bool) -> None:
        self.kwargs = kwargs
        self.superuser = superuser
        self.autocommit = False  # the driver's default
        self.queries: list[str] = []
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True


class FakeDriver:
    """Stands in for redshift_connector.connect; refuses listed passwords, can fail the network."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refuse: set[str] = set()
        self.network_failures = 0
        self.superuser = True
        self.connections: list[FakeConnection] = []

    def __call__(self, **kwargs: Any) -> FakeConnection:
        self.calls.append(kwargs)
        if self.network_failures:
            self.network_failures -= 1
            raise InterfaceError("communication error", ConnectionRefusedError(111, "refused"))
        if kwargs["password"] in self.refuse:
            raise InterfaceError(
                {
                    "S": "FATAL",
                    "C": "28000",
                    "M": f'password authentication failed for user "{kwargs["user"]}"',
                }
            )
        connection = FakeConnection(kwargs, self.superuser)
        self.connections.append(connection)
        return connection


class InLineLookup:
    """The endpoint lookup made when it is waited for, after the login, as before the two
    were asked side by side: botocore's Stubber answers in a fixed order. Calls side by
    side are tested against the sandbox (tests/integration/test_coldstart.py)."""

    def __init__(self, lookup: Callable[[], object]) -> None:
        self._lookup: Callable[[], object] | None = lookup

    def wait(self) -> None:
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            lookup()

    def join(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _lookups_in_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rsauth._broker, "Lookup", InLineLookup)


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> FakeDriver:
    fake = FakeDriver()
    monkeypatch.setattr(redshift_connector, "connect", fake)
    return fake


class Aws:
    """Stubbers on the broker's own clients."""

    def __init__(self, broker: Broker, clock: FakeClock) -> None:
        key = SessionKey(None, REGION, None, ())
        self.clock = clock
        self.rs = Stubber(broker._sessions.redshift_serverless(key))
        self.sm = Stubber(broker._sessions.secretsmanager(key))
        self.sts = Stubber(broker._sessions.sts(key))
        for stubber in (self.rs, self.sm, self.sts):
            stubber.activate()

    def workgroup(
        self, name: str = "analytics", status: str = "AVAILABLE", port: int = 5439
    ) -> None:
        self.rs.add_response(
            "get_workgroup",
            {
                "workgroup": {
                    "workgroupName": name,
                    "namespaceName": "sales-ns",
                    "status": status,
                    "endpoint": {"address": ENDPOINT, "port": port},
                }
            },
            {"workgroupName": name},
        )

    def custom_domain(self, domain: str, workgroup: str = "analytics", port: int = 5439) -> None:
        """ListCustomDomainAssociations finds the workgroup, GetWorkgroup its port."""
        self.rs.add_response(
            "list_custom_domain_associations",
            {"associations": [{"workgroupName": workgroup, "customDomainName": domain}]},
            {"customDomainName": domain},
        )
        self.workgroup(workgroup, port=port)

    def credentials(
        self,
        password: str,
        *,
        user: str = "IAM:alice",
        lifetime: int = 900,
        params: dict[str, Any] | None = None,
        server_skew: float = 0.0,
    ) -> None:
        server_now = self.clock.now + timedelta(seconds=server_skew)
        self.rs.add_response(
            "get_credentials",
            {
                "dbUser": user,
                "dbPassword": password,
                "expiration": server_now + timedelta(seconds=lifetime),
                "ResponseMetadata": {
                    "HTTPHeaders": {"date": format_datetime(server_now, usegmt=True)}
                },
            },
            params or {"workgroupName": "analytics", "dbName": "dev", "durationSeconds": 900},
        )

    def namespace(self) -> None:
        self.rs.add_response(
            "get_namespace",
            {
                "namespace": {
                    "namespaceName": "sales-ns",
                    "adminPasswordSecretArn": NAMESPACE_SECRET,
                }
            },
            {"namespaceName": "sales-ns"},
        )

    def secret(
        self, password: str, version: str, stage: str = "AWSCURRENT", secret: str = NAMESPACE_SECRET
    ) -> None:
        self.sm.add_response(
            "get_secret_value",
            {
                "SecretString": f'{{"username": "admin", "password": "{password}"}}',
                "VersionId": version * 32,
            },
            {"SecretId": secret, "VersionStage": stage},
        )

    def no_pending(self, secret: str = NAMESPACE_SECRET) -> None:
        self.sm.add_client_error(
            "get_secret_value",
            service_error_code="ResourceNotFoundException",
            expected_params={"SecretId": secret, "VersionStage": "AWSPENDING"},
        )

    def caller(self) -> None:
        self.sts.add_response(
            "get_caller_identity",
            {
                "Arn": "arn:aws:iam::123456789012:user/alice",
                "Account": "123456789012",
                "UserId": "AIDA",
            },
        )

    def done(self) -> None:
        for stubber in (self.rs, self.sm, self.sts):
            stubber.assert_no_pending_responses()


@pytest.fixture
def broker(clock: FakeClock) -> Iterator[Broker]:
    sleeps: list[float] = []
    with Broker(
        session=keyed_session(),
        region=REGION,
        clock=clock,
        environ={},
        sleep=sleeps.append,
    ) as made:
        made.sleeps = sleeps  # type: ignore[attr-defined]
        yield made


@pytest.fixture
def aws(broker: Broker, clock: FakeClock) -> Aws:
    return Aws(broker, clock)


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.DEBUG, logger="rsauth"):
        yield
    for secret in (*SECRET_VALUES, "pw-"):
        assert secret not in caplog.text


def aws_calls(broker: Broker) -> dict[str, int]:
    return {
        name: count
        for name, count in broker.stats().items()
        if "." in name
        and name[0].islower()
        and not name.startswith(("aws.", "cache.", "login.", "connect."))
    }


# -- iam ------------------------------------------------------------------


def test_iam_connect_sends_db_name_and_duration_and_forces_tls(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    connection = broker.connect(workgroup="analytics", timeout=7, application_name="etl")
    aws.done()
    call = driver.calls[0]
    assert call["user"] == "IAM:alice"
    assert call["password"] == "pw-1"
    assert call["host"] == ENDPOINT
    assert call["port"] == 5439
    assert call["database"] == "dev"
    assert call["ssl"] is True
    assert call["sslmode"] == "verify-full"
    assert call["timeout"] == 7
    assert call["application_name"] == "etl"
    origin = connection_origin(connection)
    assert origin is not None
    assert origin.broker is broker
    assert origin.workgroup == "analytics"
    assert origin.method == "iam"


def test_custom_domain_and_duration(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.credentials(
        "pw-1",
        lifetime=3600,
        params={"customDomainName": "db.example.com", "dbName": "sales", "durationSeconds": 3600},
    )
    aws.custom_domain("db.example.com", port=5441)
    credentials = broker.credentials(
        custom_domain="db.example.com", database="sales", duration=3600
    )
    aws.done()
    assert credentials.host == "db.example.com"
    # The domain's workgroup's port, not 5439.
    assert credentials.port == 5441
    assert credentials.database == "sales"
    # Counted one second short: the server's Date header has one-second resolution.
    assert credentials.expires_in == pytest.approx(3599)


def test_many_connects_cost_one_get_credentials_and_one_get_workgroup(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    for _ in range(200):
        broker.connect(workgroup="analytics")
    stats = broker.stats()
    assert stats["redshift-serverless.GetCredentials"] == 1
    assert stats["redshift-serverless.GetWorkgroup"] == 1
    assert stats["cache.misses"] == 1
    assert stats["cache.hits"] == 199


def test_credentials_are_refreshed_ahead_of_expiry(
    broker: Broker, aws: Aws, clock: FakeClock
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    assert broker.credentials(workgroup="analytics").password == "pw-1"
    clock.advance(650)  # advisory window of a 900 s login
    aws.credentials("pw-2")
    assert broker.credentials(workgroup="analytics").password == "pw-2"
    assert broker.stats()["cache.refreshes"] == 1
    assert broker.stats()["login.fetches.iam"] == 2


def test_a_repeated_call_is_a_counted_hit_of_the_same_value(
    broker: Broker, aws: Aws, clock: FakeClock
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    first = broker.credentials(workgroup="analytics")
    for _ in range(50):
        assert broker.credentials(workgroup="analytics") is first
    clock.advance(599)  # still before the advisory window of a 900 s login
    assert broker.credentials(workgroup="analytics") is first
    stats = broker.stats()
    assert (stats["cache.misses"], stats["cache.hits"]) == (1, 51)
    aws.done()


def test_a_repeated_call_reads_the_environment_again(clock: FakeClock) -> None:
    environ: dict[str, str] = {}
    with Broker(session=keyed_session(), clock=clock, environ=environ) as broker:
        aws = Aws(broker, clock)
        environ["AWS_REGION"] = REGION
        aws.credentials("pw-1")
        aws.workgroup()
        assert broker.credentials(workgroup="analytics").database == "dev"
        environ["RSAUTH_DATABASE"] = "sales"
        aws.credentials(
            "pw-2",
            params={"workgroupName": "analytics", "dbName": "sales", "durationSeconds": 900},
        )
        changed = broker.credentials(workgroup="analytics")
        assert (changed.database, changed.password) == ("sales", "pw-2")
        del environ["AWS_REGION"]
        with pytest.raises(ConfigurationError, match="no AWS region"):
            broker.credentials(workgroup="analytics")
        aws.done()


def test_lifetime_comes_from_the_servers_clock(broker: Broker, aws: Aws, clock: FakeClock) -> None:
    # The server's clock is an hour ahead: the login still lives 900 s from now.
    aws.credentials("pw-1", server_skew=3600)
    aws.workgroup()
    broker.credentials(workgroup="analytics")
    clock.advance(500)
    broker.credentials(workgroup="analytics")  # no refetch: no stub queued, it would fail
    assert broker.stats()["redshift-serverless.GetCredentials"] == 1


def test_refused_login_is_retried_with_a_fresh_credential(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    aws.credentials("pw-2")
    driver.refuse = {"pw-1"}
    broker.connect(workgroup="analytics")
    aws.done()
    assert [call["password"] for call in driver.calls] == ["pw-1", "pw-2"]
    stats = broker.stats()
    assert stats["login.retries"] == 1
    assert stats["login.recoveries"] == 1
    assert stats["redshift-serverless.GetCredentials"] == stats["login.fetches.iam"] == 2
    assert stats["connect.count"] == 1
    assert broker.sleeps  # type: ignore[attr-defined]  # backoff went through the injected sleep


def test_login_refused_every_time_is_an_authentication_error(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    aws.credentials("pw-2")
    aws.credentials("pw-3")
    driver.refuse = {"pw-1", "pw-2", "pw-3"}
    with pytest.raises(AuthenticationError) as info:
        broker.connect(workgroup="analytics")
    message = str(info.value)
    assert "IAM:alice" in message
    assert "3 attempt" in message
    assert "pw-" not in message
    assert isinstance(info.value.__cause__, InterfaceError)
    assert broker.stats()["login.retries"] == 2
    assert broker.stats()["login.recoveries"] == 0
    assert broker.stats()["connect.count"] == 0


def test_transient_network_errors_are_retried_then_mapped(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    driver.network_failures = 2
    broker.connect(workgroup="analytics")
    assert len(driver.calls) == 3
    assert broker.stats()["connect.retries"] == 2
    sleeps = broker.sleeps  # type: ignore[attr-defined]
    assert len(sleeps) == 2


def test_unreachable_endpoint_is_a_connect_error_and_the_endpoint_is_dropped(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    driver.network_failures = 3
    with pytest.raises(ConnectError, match="could not reach workgroup 'analytics'"):
        broker.connect(workgroup="analytics")
    aws.workgroup()  # looked up again on the next connect
    broker.connect(workgroup="analytics")
    aws.done()
    assert broker.stats()["redshift-serverless.GetWorkgroup"] == 2


# -- superuser ------------------------------------------------------------


def test_superuser_verified_once_per_credential(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1", user="IAMR:RedshiftAdmin")
    aws.workgroup()
    broker.connect(workgroup="analytics", method="superuser")
    broker.connect(workgroup="analytics", method="superuser")
    assert [len(c.queries) for c in driver.connections] == [1, 0]
    assert "usesuper" in driver.connections[0].queries[0]


def test_not_a_superuser_fails_closed(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.credentials("pw-1", user="IAMR:Reader")
    aws.workgroup()
    driver.superuser = False
    with pytest.raises(NotSuperuserError, match="IAMR:Reader"):
        broker.connect(workgroup="analytics", method="superuser")
    assert driver.connections[0].closed


# -- secret ---------------------------------------------------------------


def test_managed_admin_secret(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.workgroup()
    aws.namespace()
    aws.secret("pw-admin", "a")
    credentials = broker.credentials(workgroup="analytics", method="secret")
    aws.done()
    assert credentials.user == "admin"
    assert credentials.method == "secret"
    assert credentials.expires_at is None
    assert credentials.host == ENDPOINT


def test_secret_rotation_uses_awspending(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.workgroup()
    aws.namespace()
    aws.secret("pw-old", "a")
    aws.secret("pw-old", "a")  # re-fetched: unchanged
    aws.secret("pw-new", "b", stage="AWSPENDING")
    driver.refuse = {"pw-old"}
    broker.connect(workgroup="analytics", method="secret")
    broker.connect(workgroup="analytics", method="secret")  # pending login now cached
    aws.done()
    assert [call["password"] for call in driver.calls] == ["pw-old", "pw-new", "pw-new"]
    stats = broker.stats()
    assert stats["login.recoveries"] == 1
    assert stats["login.fetches.secret"] == 3, "AWSCURRENT twice, then AWSPENDING"


def test_secret_id_with_host_and_dbname_in_the_secret(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.sm.add_response(
        "get_secret_value",
        {
            "SecretString": json.dumps(
                {
                    "username": "app",
                    "password": "pw-app",
                    "host": "h.example.com",
                    "port": "5440",
                    "dbname": "sales",
                }
            ),
            "VersionId": "v" * 32,
        },
        {"SecretId": "app-login", "VersionStage": "AWSCURRENT"},
    )
    credentials = broker.credentials(secret_id="app-login")
    assert (credentials.host, credentials.port, credentials.database) == (
        "h.example.com",
        5440,
        "sales",
    )
    assert credentials.method == "secret"


def test_fallback_from_denied_iam_to_the_admin_secret(
    broker: Broker, aws: Aws, driver: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    aws.rs.add_client_error(
        "get_credentials", service_error_code="AccessDeniedException", service_message="no"
    )
    aws.caller()
    aws.workgroup()
    aws.namespace()
    aws.secret("pw-admin", "a")
    credentials = broker.credentials(workgroup="analytics", fallback=True)
    assert credentials.method == "secret"
    assert "fallback=True" in caplog.text


# -- errors ---------------------------------------------------------------


def test_access_denied_names_identity_and_workgroup(broker: Broker, aws: Aws) -> None:
    aws.rs.add_client_error(
        "get_credentials", service_error_code="AccessDeniedException", service_message="nope"
    )
    aws.caller()
    with pytest.raises(AccessDeniedError) as info:
        broker.credentials(workgroup="analytics")
    message = str(info.value)
    assert "arn:aws:iam::123456789012:user/alice" in message
    assert "workgroup 'analytics'" in message
    assert REGION in message


def test_unknown_workgroup_names_it_and_the_region(broker: Broker, aws: Aws) -> None:
    aws.rs.add_client_error(
        "get_credentials", service_error_code="ResourceNotFoundException", service_message="x"
    )
    with pytest.raises(NotFoundError) as info:
        broker.credentials(workgroup="nosuch")
    assert "workgroup 'nosuch'" in str(info.value)
    assert REGION in str(info.value)


def test_workgroup_not_available(broker: Broker, aws: Aws) -> None:
    aws.credentials("pw-1")
    aws.workgroup(status="CREATING")
    with pytest.raises(ServiceError, match="CREATING, not AVAILABLE"):
        broker.credentials(workgroup="analytics")


def test_throttling_after_botocore_retries_is_a_service_error(broker: Broker, aws: Aws) -> None:
    aws.rs.add_client_error(
        "get_credentials", service_error_code="ThrottlingException", http_status_code=400
    )
    with pytest.raises(ServiceError, match="after botocore's retries"):
        broker.credentials(workgroup="analytics")
    stats = broker.stats()
    assert stats["aws.errors"] == stats["aws.errors.ThrottlingException"] == 1
    assert stats["login.fetches"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workgroup": "Bad_Name"},
        {"workgroup": "analytics", "duration": 60},
        {"workgroup": "analytics", "role_arn": "not-an-arn"},
        {"workgroup": "analytics", "method": "magic"},
        {"workgroup": "analytics", "timout": 5},
        {"host": "c1.abc.us-east-1.redshift.amazonaws.com", "user": "u", "password": "p"},
    ],
)
def test_configuration_errors_come_before_any_aws_call(
    broker: Broker, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        broker.connect(**kwargs)
    assert aws_calls(broker) == {}


def test_missing_aws_credentials(clock: FakeClock) -> None:
    with (
        Broker(session=boto3.Session(), region=REGION, environ={}) as broker,
        pytest.raises(ConfigurationError, match="no AWS credentials"),
    ):
        broker.credentials(workgroup="analytics")


def test_missing_region(clock: FakeClock) -> None:
    with (
        Broker(session=keyed_session(), environ={}) as broker,
        pytest.raises(ConfigurationError, match="no AWS region"),
    ):
        broker.credentials(workgroup="analytics")


def test_password_to_a_host_needs_no_aws(driver: FakeDriver) -> None:
    with Broker(session=boto3.Session(), environ={}) as broker:
        connection = broker.connect(host="localhost", port=5439, user="bob", password="pw-bob")
        assert id(connection) == id(driver.connections[0])
        assert driver.calls[0]["user"] == "bob"


def test_refused_password_is_not_retried(driver: FakeDriver) -> None:
    driver.refuse = {"pw-bob"}
    with Broker(session=boto3.Session(), environ={}) as broker, pytest.raises(AuthenticationError):
        broker.connect(host="localhost", user="bob", password="pw-bob")
    assert len(driver.calls) == 1


# -- cache management ------------------------------------------------------


def test_cache_keys_never_contain_secrets(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    broker.connect(workgroup="analytics")
    broker.connect(workgroup="analytics", user="bob", password="pw-bob")
    keys = [repr(key) for key in broker._logins._cache._entries]
    keys += [repr(key) for key in broker._connections._endpoints._cache._entries]
    keys += [repr(broker._prepare(workgroup="analytics", user="bob", password="pw-bob").aws.key)]
    for text in keys:
        for secret in ("pw-", *SECRET_VALUES):
            assert secret not in text


def test_invalidate(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    broker.credentials(workgroup="analytics")
    assert broker.invalidate(workgroup="other") == 0
    assert broker.invalidate(workgroup="analytics") == 2  # the login and the endpoint
    aws.credentials("pw-2")
    aws.workgroup()
    assert broker.credentials(workgroup="analytics").password == "pw-2"
    assert broker.invalidate() == 2
    with pytest.raises(ConfigurationError, match="unknown field"):
        broker.invalidate(password="x")


def test_stats_snapshot_keys(broker: Broker) -> None:
    stats = broker.stats()
    for name in ("cache.hits", "cache.misses", "cache.refreshes", "login.retries"):
        assert stats[name] == 0
    stats["cache.hits"] = 99
    assert broker.stats()["cache.hits"] == 0


def test_after_fork_the_child_starts_empty(broker: Broker, aws: Aws) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    broker.credentials(workgroup="analytics")
    broker._after_fork()
    assert broker.stats()["cache.misses"] == 0
    assert broker.stats().get("redshift-serverless.GetCredentials") is None
    assert list(broker._logins._cache._entries) == []


def test_closed_broker_refuses_work(clock: FakeClock) -> None:
    broker = Broker(session=keyed_session(), region=REGION, environ={})
    broker.close()
    with pytest.raises(ConfigurationError, match="closed"):
        broker.credentials(workgroup="analytics")


def test_module_level_functions_use_one_default_broker() -> None:
    from rsauth import _api

    assert _api.default_broker() is _api.default_broker()
    assert rsauth.connect.__doc__
    assert rsauth.get_credentials.__doc__
