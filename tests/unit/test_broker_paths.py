"""The Broker's login and connection paths with stubbed AWS and a fake driver: what each
failure becomes, how a refused login recovers, how long lookups and secrets are kept."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redshift_connector
from botocore.exceptions import EndpointConnectionError
from redshift_connector.error import InterfaceError, ProgrammingError

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
from rsauth._logins import _same_login
from rsauth._sources import Login

from .conftest import FakeClock
from .test_broker import (  # noqa: F401 (_no_secret_in_logs, _lookups_in_line: autouse fixtures)
    ENDPOINT,
    NAMESPACE_SECRET,
    REGION,
    Aws,
    FakeDriver,
    _lookups_in_line,
    _no_secret_in_logs,
    keyed_session,
)

MakeBroker = Callable[..., Broker]


@pytest.fixture
def make_broker(clock: FakeClock) -> Iterator[MakeBroker]:
    """A Broker with the given settings; ``sleeps``: the backoff it asked for."""
    made: list[Broker] = []

    def make(**settings: Any) -> Broker:
        sleeps: list[float] = []
        made.append(
            Broker(
                session=keyed_session(),
                region=REGION,
                clock=clock,
                environ={},
                sleep=sleeps.append,
                **settings,
            )
        )
        made[-1].sleeps = sleeps  # type: ignore[attr-defined]
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> Broker:
    return make_broker()


@pytest.fixture
def aws(broker: Broker, clock: FakeClock) -> Aws:
    return Aws(broker, clock)


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> FakeDriver:
    fake = FakeDriver()
    monkeypatch.setattr(redshift_connector, "connect", fake)
    return fake


def fail_first(monkeypatch: pytest.MonkeyPatch, driver: FakeDriver, *errors: BaseException) -> None:
    """The driver raises ``errors`` on its first connects, then behaves as ``driver``."""
    pending = list(errors)

    def connect(**kwargs: Any) -> Any:
        if pending:
            driver.calls.append(kwargs)
            raise pending.pop(0)
        return driver(**kwargs)

    monkeypatch.setattr(redshift_connector, "connect", connect)


def app_secret(aws: Aws, password: str, version: str, stage: str = "AWSCURRENT") -> None:
    aws.secret(password, version, stage=stage, secret="app-login")


# -- secrets ------------------------------------------------------------------



def ops_workgroup(aws: Aws) -> None:
    """GetWorkgroup answers a second workgroup, ``ops``, in its own namespace ``ops-ns``."""
    aws.rs.add_response(
        "get_workgroup",
        {
            "workgroup": {
                "workgroupName": "ops",
                "namespaceName": "ops-ns",
                "status": "AVAILABLE",
                "endpoint": {"address": "ops." + ENDPOINT.partition(".")[2], "port": 5439},
            }
        },
        {"workgroupName": "ops"},
    )

def test_a_secret_is_read_again_after_its_refresh_interval_however_often_it_is_used(
    make_broker: MakeBroker, driver: FakeDriver, clock: FakeClock
) -> None:
    broker = make_broker(secret_refresh=60)
    aws = Aws(broker, clock)
    aws.workgroup()
    app_secret(aws, "pw-a", "a")
    broker.connect(workgroup="analytics", secret_id="app-login")
    clock.advance(40)
    broker.connect(workgroup="analytics", secret_id="app-login")  # used, not re-read
    clock.advance(30)
    app_secret(aws, "pw-b", "b")
    broker.connect(workgroup="analytics", secret_id="app-login")
    aws.done()
    assert [call["password"] for call in driver.calls] == ["pw-a", "pw-a", "pw-b"]


def test_a_pending_version_that_worked_is_refreshed_like_any_secret(
    make_broker: MakeBroker, driver: FakeDriver, clock: FakeClock
) -> None:
    broker = make_broker(secret_refresh=60)
    aws = Aws(broker, clock)
    aws.workgroup()
    app_secret(aws, "pw-old", "a")
    app_secret(aws, "pw-old", "a")
    app_secret(aws, "pw-new", "b", stage="AWSPENDING")
    driver.refuse = {"pw-old"}
    broker.connect(workgroup="analytics", secret_id="app-login")
    clock.advance(61)
    app_secret(aws, "pw-new", "b")  # the rotation finished
    broker.connect(workgroup="analytics", secret_id="app-login")
    aws.done()
    assert [call["password"] for call in driver.calls] == ["pw-old", "pw-new", "pw-new"]


def test_a_refused_secret_outside_a_rotation_is_an_authentication_error_quoting_the_server(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.workgroup()
    app_secret(aws, "pw-old", "a")
    for _ in range(2):  # re-read after each refusal: unchanged, and no AWSPENDING
        app_secret(aws, "pw-old", "a")
        aws.no_pending("app-login")
    driver.refuse = {"pw-old"}
    with pytest.raises(AuthenticationError) as info:
        broker.connect(workgroup="analytics", secret_id="app-login")
    aws.done()
    assert str(info.value) == (
        "the database at workgroup 'analytics' refused the secret login of 'admin' after "
        "3 attempt(s), each with a freshly fetched credential: "
        'password authentication failed for user "admin"'
    )
    assert broker.sleeps[0] >= 0.2  # type: ignore[attr-defined]  # backoff, not a hammering


def test_a_new_version_with_the_same_login_is_tried_as_it_is_without_awspending(
    make_broker: MakeBroker, driver: FakeDriver, clock: FakeClock
) -> None:
    broker = make_broker(login_attempts=2)
    aws = Aws(broker, clock)
    aws.workgroup()
    app_secret(aws, "pw-same", "a")
    app_secret(aws, "pw-same", "b")  # re-put unchanged: a new version, no rotation running
    driver.refuse = {"pw-same"}
    with pytest.raises(AuthenticationError, match="after 2 attempt"):
        broker.connect(workgroup="analytics", secret_id="app-login")
    aws.done()  # AWSPENDING was never asked for


def test_a_missing_secret_is_not_found_naming_it_and_the_region(broker: Broker, aws: Aws) -> None:
    aws.workgroup()
    aws.sm.add_client_error(
        "get_secret_value",
        service_error_code="ResourceNotFoundException",
        service_message="Secrets Manager can't find the specified secret.",
        expected_params={"SecretId": "app-login", "VersionStage": "AWSCURRENT"},
    )
    with pytest.raises(NotFoundError) as info:
        broker.credentials(workgroup="analytics", secret_id="app-login")
    assert "'app-login'" in str(info.value)
    assert REGION in str(info.value)


def test_a_malformed_secret_names_the_secret(broker: Broker, aws: Aws) -> None:
    aws.workgroup()
    aws.sm.add_response(
        "get_secret_value",
        {"SecretString": "not json", "VersionId": "v" * 32},
        {"SecretId": "app-login", "VersionStage": "AWSCURRENT"},
    )
    with pytest.raises(ConfigurationError, match="'app-login'"):
        broker.credentials(workgroup="analytics", secret_id="app-login")


def test_a_secret_without_host_and_no_endpoint_given_says_what_to_pass(
    broker: Broker, aws: Aws
) -> None:
    aws.sm.add_response(
        "get_secret_value",
        {"SecretString": json.dumps({"username": "app", "password": "pw-app"})},
        {"SecretId": "app-login", "VersionStage": "AWSCURRENT"},
    )
    with pytest.raises(ConfigurationError) as info:
        broker.credentials(secret_id="app-login")
    assert str(info.value) == (
        "no endpoint to connect to: pass workgroup=, custom_domain= or host= "
        "(the secret names no host)"
    )


def test_each_workgroup_reads_its_own_namespaces_admin_secret(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    other_secret = NAMESPACE_SECRET.replace("ns-admin", "ops-admin")
    aws.workgroup()
    aws.namespace()
    aws.secret("pw-sales", "a")
    ops_workgroup(aws)
    aws.rs.add_response(
        "get_namespace",
        {"namespace": {"namespaceName": "ops-ns", "adminPasswordSecretArn": other_secret}},
        {"namespaceName": "ops-ns"},
    )
    aws.secret("pw-ops", "b", secret=other_secret)
    assert broker.credentials(workgroup="analytics", method="secret").password == "pw-sales"
    assert broker.credentials(workgroup="ops", method="secret").password == "pw-ops"
    aws.done()


# -- fallback -----------------------------------------------------------------


def deny_iam(aws: Aws) -> None:
    aws.rs.add_client_error(
        "get_credentials", service_error_code="AccessDeniedException", service_message="no"
    )
    aws.caller()


def test_a_fallback_login_is_the_admin_secrets_and_iam_is_tried_again_next_time(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    deny_iam(aws)
    aws.workgroup()
    aws.namespace()
    aws.secret("pw-admin", "a")
    assert broker.credentials(workgroup="analytics", fallback=True).method == "secret"
    # The same login serves method='secret': the secret is not read twice.
    assert broker.credentials(workgroup="analytics", method="secret").password == "pw-admin"
    # Once the identity is granted, the next fallback call logs in with IAM again.
    aws.credentials("pw-1")
    assert broker.credentials(workgroup="analytics", fallback=True).method == "iam"
    aws.done()


def test_no_fallback_unless_asked(broker: Broker, aws: Aws) -> None:
    deny_iam(aws)
    with pytest.raises(AccessDeniedError) as info:
        broker.credentials(workgroup="analytics", method="iam", fallback=False)
    aws.done()
    assert "fallback" not in str(info.value)
    # Neither GetWorkgroup nor GetNamespace nor the secret was asked for.
    assert "redshift-serverless.GetWorkgroup" not in broker.stats()


def test_a_failed_fallback_reports_both_failures(broker: Broker, aws: Aws) -> None:
    deny_iam(aws)
    aws.workgroup()
    aws.rs.add_response(
        "get_namespace", {"namespace": {"namespaceName": "sales-ns"}}, {"namespaceName": "sales-ns"}
    )
    with pytest.raises(AccessDeniedError) as info:
        broker.credentials(workgroup="analytics", fallback=True)
    message = str(info.value)
    assert message.startswith(
        "IAM identity arn:aws:iam::123456789012:user/alice was refused "
        "redshift-serverless:GetCredentials"
    )
    assert message.endswith(
        "; the fallback to the managed admin secret failed too: namespace 'sales-ns' in "
        f"{REGION} has no Redshift-managed admin secret (manageAdminPassword is off); pass "
        "secret_id= of a secret holding the login"
    )


# -- IAM logins -----------------------------------------------------------------


def test_a_superuser_login_is_named_superuser(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.credentials("pw-1", user="IAMR:RedshiftAdmin")
    aws.workgroup()
    assert broker.credentials(workgroup="analytics", method="superuser").method == "superuser"


def test_a_login_that_is_no_superuser_is_refused_naming_the_target(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1", user="IAMR:Reader")
    aws.workgroup()
    driver.superuser = False
    with pytest.raises(NotSuperuserError, match="logged in to workgroup 'analytics' but"):
        broker.connect(workgroup="analytics", method="superuser")


def test_after_invalidate_a_superuser_login_is_checked_again(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1", user="IAMR:RedshiftAdmin")
    aws.workgroup()
    broker.connect(workgroup="analytics", method="superuser")
    broker.invalidate()
    aws.credentials("pw-2", user="IAMR:RedshiftAdmin")
    aws.workgroup()
    broker.connect(workgroup="analytics", method="superuser")
    assert [len(c.queries) for c in driver.connections] == [1, 1]


def test_an_iam_login_refused_again_with_the_same_password_never_reads_a_secret(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    for _ in range(2):
        aws.credentials("pw-1")  # AWS handed out the same password again
    driver.refuse = {"pw-1"}
    with pytest.raises(AuthenticationError, match="refused the iam login of 'IAM:alice'"):
        broker.connect(workgroup="analytics")
    aws.done()


def test_a_refusal_does_not_drop_a_login_refreshed_meanwhile(
    broker: Broker, aws: Aws, driver: FakeDriver, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    aws.credentials("pw-2")

    def connect(**kwargs: Any) -> Any:
        if kwargs["password"] == "pw-1":
            # While this connect was under way, another caller found the login expired
            # and fetched pw-2.
            clock.advance(900)
            assert broker.credentials(workgroup="analytics").password == "pw-2"
        return driver(**kwargs)

    driver.refuse = {"pw-1"}
    monkeypatch.setattr(redshift_connector, "connect", connect)
    broker.connect(workgroup="analytics")
    aws.done()
    assert [call["password"] for call in driver.calls] == ["pw-1", "pw-2"]
    assert broker.stats()["redshift-serverless.GetCredentials"] == 2


def test_a_workgroup_refused_by_aws_while_paused_is_reported_as_not_available(
    broker: Broker, aws: Aws
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    broker.credentials(workgroup="analytics")  # the endpoint is cached
    broker.invalidate(method="iam")
    aws.rs.add_client_error(
        "get_credentials",
        service_error_code="ValidationException",
        service_message="workgroup is not available",
    )
    aws.workgroup(status="DELETING")  # looked up afresh, not from the cache
    with pytest.raises(ServiceError, match="DELETING, not AVAILABLE"):
        broker.credentials(workgroup="analytics")
    aws.done()


def test_aws_rejecting_a_custom_domain_login_is_a_configuration_error(
    broker: Broker, aws: Aws
) -> None:
    aws.rs.add_client_error(
        "get_credentials",
        service_error_code="ValidationException",
        service_message="no such custom domain",
    )
    with pytest.raises(ConfigurationError, match="no such custom domain"):
        broker.credentials(custom_domain="db.example.com")
    aws.done()


# -- connecting -----------------------------------------------------------------


def test_the_same_login_at_the_same_place_is_the_same_credentials_value(
    broker: Broker, aws: Aws
) -> None:
    aws.workgroup()
    app_secret(aws, "pw-a", "a")
    first = broker.credentials(workgroup="analytics", secret_id="app-login")
    assert broker.credentials(workgroup="analytics", secret_id="app-login") is first
    assert first.workgroup == "analytics"
    # The same secret login at another port is another value.
    elsewhere = broker.credentials(workgroup="analytics", secret_id="app-login", port=5440)
    assert (elsewhere.port, first.port) == (5440, 5439)
    aws.done()


def test_an_endpoint_is_looked_up_again_after_its_lifetime(
    make_broker: MakeBroker, driver: FakeDriver, clock: FakeClock
) -> None:
    broker = make_broker(endpoint_ttl=600)
    aws = Aws(broker, clock)
    aws.credentials("pw-1", lifetime=3600)
    aws.workgroup()
    broker.connect(workgroup="analytics")
    clock.advance(590)
    broker.connect(workgroup="analytics")
    clock.advance(20)
    aws.workgroup(port=5440)
    broker.connect(workgroup="analytics")
    aws.done()
    assert [call["port"] for call in driver.calls] == [5439, 5439, 5440]


def test_network_retries_back_off(broker: Broker, aws: Aws, driver: FakeDriver) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    driver.network_failures = 2
    broker.connect(workgroup="analytics")
    first, second = broker.sleeps  # type: ignore[attr-defined]
    assert 0.2 <= first <= 0.4
    assert 0.4 <= second <= 0.6


def test_a_host_without_a_port_gets_redshifts_port(driver: FakeDriver) -> None:
    with Broker(environ={}) as broker:
        broker.connect(host="localhost", user="bob", password="pw-bob")
    assert driver.calls[0]["port"] == 5439


def test_a_missing_database_is_not_found_with_the_servers_words(
    broker: Broker, aws: Aws, monkeypatch: pytest.MonkeyPatch, driver: FakeDriver
) -> None:
    aws.credentials(
        "pw-1", params={"workgroupName": "analytics", "dbName": "nosuch", "durationSeconds": 900}
    )
    aws.workgroup()
    fail_first(
        monkeypatch,
        driver,
        ProgrammingError({"S": "FATAL", "C": "3D000", "M": 'database "nosuch" does not exist'}),
    )
    with pytest.raises(NotFoundError) as info:
        broker.connect(workgroup="analytics", database="nosuch")
    assert str(info.value) == (
        "database 'nosuch' does not exist on workgroup 'analytics': database \"nosuch\" "
        "does not exist. Pass database= (default 'dev')"
    )


def test_another_server_error_is_a_connect_error_with_its_code_and_words(
    broker: Broker, aws: Aws, monkeypatch: pytest.MonkeyPatch, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    fail_first(
        monkeypatch,
        driver,
        InterfaceError({"S": "FATAL", "C": "53300", "M": "sorry, too many clients already"}),
    )
    with pytest.raises(ConnectError) as info:
        broker.connect(workgroup="analytics")
    assert str(info.value) == (
        f"the database at {ENDPOINT}:5439 answered 53300: sorry, too many clients already"
    )
    assert len(driver.calls) == 1  # a server's answer is not retried


def test_a_refused_certificate_says_what_to_check(
    broker: Broker, aws: Aws, monkeypatch: pytest.MonkeyPatch, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    fail_first(monkeypatch, driver, ssl.SSLCertVerificationError("certificate verify failed"))
    with pytest.raises(ConnectError) as info:
        broker.connect(workgroup="analytics")
    assert str(info.value) == (
        f"TLS to {ENDPOINT}:5439 failed (SSLCertVerificationError): the server certificate "
        "was not accepted; check SSL_CERT_FILE (the CA bundle) and the host name"
    )


def test_an_unreachable_workgroup_says_where_and_what_to_check(
    broker: Broker, aws: Aws, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    driver.network_failures = 3
    with pytest.raises(ConnectError) as info:
        broker.connect(workgroup="analytics")
    assert str(info.value) == (
        f"could not reach workgroup 'analytics' at {ENDPOINT}:5439 after 3 attempt(s) "
        "(InterfaceError); check the network path (VPC, security group, publicly "
        "accessible) and try again"
    )


def test_an_unreachable_host_is_reported_without_aws(driver: FakeDriver) -> None:
    driver.network_failures = 3
    with Broker(environ={}) as broker, pytest.raises(ConnectError, match="could not reach"):
        broker.connect(host="localhost", port=5439, user="bob", password="pw-bob")


@pytest.mark.parametrize("workgroup", [None, "analytics"])
def test_an_unreachable_custom_domain_is_looked_up_again(
    broker: Broker, aws: Aws, driver: FakeDriver, workgroup: str | None
) -> None:
    # With workgroup= too (say from RSAUTH_WORKGROUP), the domain's lookup is still dropped.
    params = {"customDomainName": "db.example.com", "dbName": "dev", "durationSeconds": 900}
    aws.credentials("pw-1", params=params)
    aws.custom_domain("db.example.com")
    driver.network_failures = 3
    with pytest.raises(ConnectError, match="could not reach"):
        broker.connect(custom_domain="db.example.com", workgroup=workgroup)
    aws.custom_domain("db.example.com", port=5441)  # the association moved
    broker.connect(custom_domain="db.example.com", workgroup=workgroup)
    aws.done()
    assert driver.calls[-1]["port"] == 5441


def test_any_other_failure_names_its_type(
    broker: Broker, aws: Aws, monkeypatch: pytest.MonkeyPatch, driver: FakeDriver
) -> None:
    aws.credentials("pw-1")
    aws.workgroup()
    fail_first(monkeypatch, driver, InterfaceError("Server refuses SSL"))
    with pytest.raises(ConnectError) as info:
        broker.connect(workgroup="analytics")
    assert str(info.value) == (
        f"connecting to workgroup 'analytics' at {ENDPOINT}:5439 failed (InterfaceError)"
    )


# -- telling logins apart -------------------------------------------------------


def login(password: str, version: str | None) -> Login:
    return Login(user="admin", password=password, method="secret", version_id=version)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (login("pw-1", "a"), login("pw-1", "a"), True),
        (login("pw-1", "a"), login("pw-1", "b"), False),  # a new version, whatever it holds
        (login("pw-1", "a"), login("pw-2", "a"), True),  # a version is never rewritten
        (login("pw-1", None), login("pw-1", None), True),
        (login("pw-1", None), login("pw-2", None), False),
        (login("pw-1", "a"), login("pw-1", None), True),  # without both versions: the login
        (login("pw-1", None), login("pw-1", "a"), True),
        (login("pw-1", None), Login("other", "pw-1", "secret"), False),
    ],
)
def test_two_secret_logins_are_the_same_by_version_else_by_user_and_password(
    a: Login, b: Login, same: bool
) -> None:
    assert _same_login(a, b) is same


def test_a_missing_namespace_names_it_and_the_region(broker: Broker, aws: Aws) -> None:
    aws.workgroup()
    aws.rs.add_client_error(
        "get_namespace",
        service_error_code="ResourceNotFoundException",
        service_message="namespace not found",
        expected_params={"namespaceName": "sales-ns"},
    )
    with pytest.raises(NotFoundError) as info:
        broker.credentials(workgroup="analytics", method="secret")
    assert "'sales-ns'" in str(info.value)
    assert REGION in str(info.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on the loopback that accepts and never answers, like a workgroup that
    is resuming (its port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(10)
    for sock in [listener, *accepted]:
        sock.close()


@pytest.mark.parametrize(
    ("settings", "waited"),
    [
        ({}, "0.3"),  # resume_timeout when the driver has none
        ({"timeout": 0.6}, "0.6"),  # the driver's own timeout when it is longer
    ],
)
def test_a_workgroup_that_does_not_answer_in_time_may_still_be_resuming(
    silent_server: int, settings: dict[str, Any], waited: str
) -> None:
    # The real driver, against a server that took the connection and holds its answer.
    with Broker(environ={}, resume_timeout=0.3) as broker, pytest.raises(ConnectError) as info:
        broker.connect(
            host="127.0.0.1", port=silent_server, user="bob", password="pw-bob", **settings
        )
    assert str(info.value) == (
        f"host '127.0.0.1' at 127.0.0.1:{silent_server} accepted the connection but did not "
        f"resume within {waited} s; it may still be resuming: try again, or raise "
        "resume_timeout= (RSAUTH_RESUME_TIMEOUT)"
    )


def test_an_open_connection_gets_the_drivers_timeout_back(
    broker: Broker, aws: Aws, driver: FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handshake may have waited longer (resume_timeout); every later read waits
    # timeout= again, on the driver's socket (redshift_connector's Connection._usock).
    sockets: list[socket.socket] = []

    def connect(**kwargs: Any) -> Any:
        connection = driver(**kwargs)
        connection._usock = sock = socket.socket()  # type: ignore[attr-defined]
        sock.settimeout(99)
        sockets.append(sock)
        return connection

    monkeypatch.setattr(redshift_connector, "connect", connect)
    aws.credentials("pw-1")
    aws.workgroup()
    try:
        broker.connect(workgroup="analytics", timeout=7)
        assert sockets[0].gettimeout() == 7
    finally:
        for sock in sockets:
            sock.close()


def test_an_unknown_custom_domain_names_the_region(broker: Broker, aws: Aws) -> None:
    params = {"customDomainName": "db.example.com", "dbName": "dev", "durationSeconds": 900}
    aws.credentials("pw-1", params=params)
    aws.rs.add_response(
        "list_custom_domain_associations",
        {"associations": []},
        {"customDomainName": "db.example.com"},
    )
    with pytest.raises(NotFoundError) as info:
        broker.credentials(custom_domain="db.example.com")
    assert "'db.example.com'" in str(info.value)
    assert REGION in str(info.value)


def test_the_login_cache_holds_cache_size_logins(make_broker: MakeBroker, clock: FakeClock) -> None:
    broker = make_broker(cache_size=1)
    aws = Aws(broker, clock)
    other = {"workgroupName": "ops", "dbName": "dev", "durationSeconds": 900}
    aws.credentials("pw-1")
    aws.workgroup()
    aws.credentials("pw-2", params=other)
    aws.workgroup("ops")
    aws.credentials("pw-3")  # the first login made room for the second
    assert broker.credentials(workgroup="analytics").password == "pw-1"
    assert broker.credentials(workgroup="ops").password == "pw-2"
    assert broker.credentials(workgroup="analytics").password == "pw-3"
    aws.done()


def test_a_secret_the_identity_may_not_read_names_the_identity_and_the_action(
    broker: Broker, aws: Aws
) -> None:
    aws.workgroup()
    aws.sm.add_client_error(
        "get_secret_value",
        service_error_code="AccessDeniedException",
        service_message="not authorized",
        expected_params={"SecretId": "app-login", "VersionStage": "AWSCURRENT"},
    )
    aws.caller()
    with pytest.raises(AccessDeniedError) as info:
        broker.credentials(workgroup="analytics", secret_id="app-login")
    assert str(info.value).startswith(
        "IAM identity arn:aws:iam::123456789012:user/alice was refused "
        f"secretsmanager:GetSecretValue on secret 'app-login' in {REGION}"
    )


def test_secrets_manager_out_of_reach_is_a_service_error_naming_the_secret(
    broker: Broker, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.workgroup()

    def unreachable(**_: Any) -> Any:
        raise EndpointConnectionError(
            endpoint_url="https://secretsmanager.us-east-1.amazonaws.com/"
        )

    monkeypatch.setattr(aws.sm.client, "get_secret_value", unreachable)
    with pytest.raises(ServiceError) as info:
        broker.credentials(workgroup="analytics", secret_id="app-login")
    assert str(info.value).startswith(
        f"secretsmanager:GetSecretValue on secret 'app-login' in {REGION} failed after "
        "botocore's retries: Could not connect to the endpoint URL"
    )


def test_namespace_roles_are_cached_like_the_endpoint_and_fresh_asks_again(
    broker: Broker, aws: Aws
) -> None:
    role = "arn:aws:iam::123456789012:role/copy-role"

    def namespace(roles: list[str]) -> None:
        aws.rs.add_response(
            "get_namespace",
            {
                "namespace": {
                    "namespaceName": "sales-ns",
                    "defaultIamRoleArn": role,
                    "iamRoles": roles,
                }
            },
            {"namespaceName": "sales-ns"},
        )

    aws.workgroup()
    namespace([role])
    found = broker.namespace_roles(workgroup="analytics")
    assert (found.namespace, found.default_role, found.roles) == ("sales-ns", role, (role,))
    assert broker.namespace_roles(workgroup="analytics") == found  # no AWS call
    namespace([])
    assert broker.namespace_roles(workgroup="analytics", fresh=True).roles == ()
    # Another workgroup's namespace has its own roles.
    ops_workgroup(aws)
    aws.rs.add_response(
        "get_namespace", {"namespace": {"namespaceName": "ops-ns"}}, {"namespaceName": "ops-ns"}
    )
    assert broker.namespace_roles(workgroup="ops").namespace == "ops-ns"
    aws.done()


def test_a_missing_namespace_of_the_roles_names_the_region(broker: Broker, aws: Aws) -> None:
    aws.workgroup()
    aws.rs.add_client_error(
        "get_namespace",
        service_error_code="ResourceNotFoundException",
        service_message="namespace not found",
        expected_params={"namespaceName": "sales-ns"},
    )
    with pytest.raises(NotFoundError, match=REGION):
        broker.namespace_roles(workgroup="analytics")
