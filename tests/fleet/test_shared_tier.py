"""The shared tier in one process: several Brokers (each its own in-process cache) on one store."""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

import rsauth
from rsauth._cache import Lease
from rsauth._fleet import SharedRequest
from rsauth._fleet._crypto import Binding, FleetKey, KmsKey, parse_fleet_key
from rsauth._policies import Target, login_policy
from rsauth._sources import Login
from rsauth.sandbox import Sandbox
from tests._iam import LOGIN_ACTIONS, WORKGROUPS, allow, make_role, make_user
from tests.conftest import register_secret
from tests.fleet.conftest import FLEET_KEY, RedisServer, entry_keys

ACCOUNT = "123456789012"
# What a fleet worker's role does: log in, and in KMS mode seal and open entries.
MAY_LOG_IN = allow([*LOGIN_ACTIONS, "kms:GenerateDataKey", "kms:Decrypt"], "*")


def current_user(connection: Any) -> str:
    cursor = connection.cursor()
    cursor.execute("select current_user")
    row = cursor.fetchone()
    cursor.close()
    return str(row[0])


def shared(server: RedisServer, **kwargs: Any) -> rsauth.RedisCache:
    kwargs.setdefault("fleet_key", FLEET_KEY)
    return rsauth.RedisCache(server.url, **kwargs)


@pytest.fixture
def brokers(sandbox: Sandbox, redis_server: RedisServer) -> Iterator[list[rsauth.Broker]]:
    """Three Brokers, as three workers would be, sharing one store."""
    made = [rsauth.Broker(shared_cache=shared(redis_server)) for _ in range(3)]
    try:
        yield made
    finally:
        for broker in made:
            broker.close()


def get_credentials(sb: Sandbox) -> int:
    return sb.calls().get("redshift-serverless.GetCredentials", 0)


def test_one_fetch_serves_every_broker(sandbox: Sandbox, brokers: list[rsauth.Broker]) -> None:
    users = set()
    for broker in brokers:
        with broker.connect(workgroup=sandbox.workgroup) as connection:
            users.add(current_user(connection))
    assert users == {"IAM:sandbox-admin"}
    assert get_credentials(sandbox) == 1
    # One GetCallerIdentity for the access key: the first worker's answer, sealed in the
    # store, serves the other two.
    assert sandbox.calls().get("sts.GetCallerIdentity", 0) == 1


def test_the_environment_turns_it_on(
    sandbox: Sandbox, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSAUTH_SHARED_CACHE_URL", redis_server.url)
    monkeypatch.setenv("RSAUTH_SHARED_CACHE_KEY", FLEET_KEY)
    with rsauth.Broker() as first, rsauth.Broker() as second:
        first.credentials(workgroup=sandbox.workgroup)
        second.credentials(workgroup=sandbox.workgroup)
    assert get_credentials(sandbox) == 1
    assert len(entry_keys(redis_server)) == 1


class StoppedClock:
    """The time of day the Brokers see: now, until a test moves it on."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_a_refresh_is_shared_too(sandbox: Sandbox, redis_server: RedisServer) -> None:
    clock = StoppedClock()
    made = [rsauth.Broker(shared_cache=shared(redis_server), clock=clock) for _ in range(3)]
    try:
        first = [b.credentials(workgroup=sandbox.workgroup).password for b in made]
        assert len(set(first)) == 1
        lifetime = made[0].credentials(workgroup=sandbox.workgroup).expires_in
        assert lifetime is not None
        # Into the mandatory window: min(120 s, L/4) before expiry.
        clock.now += timedelta(seconds=lifetime - min(120, lifetime / 4) + 1)
        second = [b.credentials(workgroup=sandbox.workgroup).password for b in made]
        assert len(set(second)) == 1
        assert second[0] != first[0]
        assert get_credentials(sandbox) == 2
    finally:
        for broker in made:
            broker.close()


def test_a_refused_login_is_dropped_from_the_store(
    sandbox: Sandbox, brokers: list[rsauth.Broker]
) -> None:
    for broker in brokers:
        broker.connect(workgroup=sandbox.workgroup).close()
    assert get_credentials(sandbox) == 1
    sandbox.expire_passwords()
    for broker in brokers:
        with broker.connect(workgroup=sandbox.workgroup) as connection:
            assert current_user(connection) == "IAM:sandbox-admin"
    # One fresh login for all three: the first refusal replaced the store's entry.
    assert get_credentials(sandbox) == 2


def test_secret_logins_are_shared(sandbox: Sandbox, brokers: list[rsauth.Broker]) -> None:
    for broker in brokers:
        with broker.connect(workgroup=sandbox.workgroup, method="secret") as connection:
            assert current_user(connection) == "admin"
    assert sandbox.calls().get("secretsmanager.GetSecretValue", 0) == 1


def test_threads_and_brokers_fetch_once(sandbox: Sandbox, brokers: list[rsauth.Broker]) -> None:
    errors: list[BaseException] = []

    def work(broker: rsauth.Broker) -> None:
        try:
            broker.credentials(workgroup=sandbox.workgroup)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(b,)) for b in brokers for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert get_credentials(sandbox) == 1


# -- identities and integrity -----------------------------------------------------------


def caller_key(access_key: str) -> bytes:
    """Where the store keeps ``access_key``'s caller entry (a store-only attacker who
    watched the workers write learns the same)."""
    digest = FleetKey(parse_fleet_key(FLEET_KEY, source="test")).caller_key(access_key)
    return f"rsauth:v1:c:{digest}".encode()


def session_of(keys: dict[str, str]) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=keys["aws_access_key_id"],
        aws_secret_access_key=keys["aws_secret_access_key"],
    )


@pytest.fixture
def mallory(sandbox: Sandbox, redis_server: RedisServer) -> dict[str, str]:
    """Another identity of the same fleet, logged in once: its caller entry is in the store."""
    name = f"fleet-mallory-{uuid.uuid4().hex[:8]}"
    keys = make_user(name, allow(LOGIN_ACTIONS, WORKGROUPS))
    with rsauth.Broker(
        session_of(keys), shared_cache=shared(redis_server)
    ) as broker, broker.connect(workgroup=sandbox.workgroup) as connection:
        assert current_user(connection) == f"IAM:{name}"
    assert redis_server.client().get(caller_key(keys["aws_access_key_id"]))
    return {**keys, "name": name}


def assert_the_poison_is_not_trusted(
    sandbox: Sandbox, redis_server: RedisServer, mallory: dict[str, str]
) -> None:
    sts = sandbox.calls().get("sts.GetCallerIdentity", 0)
    with rsauth.Broker(shared_cache=shared(redis_server)) as victim:
        with victim.connect(workgroup=sandbox.workgroup) as connection:
            assert current_user(connection) == "IAM:sandbox-admin"
        # The victim asked STS itself rather than take the planted ARN.
        assert victim.stats().get("sts.GetCallerIdentity") == 1
    assert sandbox.calls().get("sts.GetCallerIdentity", 0) == sts + 1
    # Nor did it publish its own login under mallory's binding, for mallory to read.
    keys = {k: v for k, v in mallory.items() if k != "name"}
    with rsauth.Broker(session_of(keys), shared_cache=shared(redis_server)) as again:
        assert again.credentials(workgroup=sandbox.workgroup).user == f"IAM:{mallory['name']}"


def test_a_caller_entry_copied_from_another_access_key_is_not_trusted(
    sandbox: Sandbox,
    redis_server: RedisServer,
    mallory: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis_server.client()
    victims = caller_key(sandbox.env["AWS_ACCESS_KEY_ID"])
    # Someone with write access to the store puts mallory's caller entry under the
    # victim's access key: trusted, it would make the victim read and write mallory's logins.
    client.set(victims, client.get(caller_key(mallory["aws_access_key_id"])), px=60_000)
    assert_the_poison_is_not_trusted(sandbox, redis_server, mallory)
    assert any(
        "caller entry of this access key was rejected" in r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING"
    )


def test_a_caller_entry_sealed_with_another_key_is_not_trusted(
    sandbox: Sandbox, redis_server: RedisServer, mallory: dict[str, str]
) -> None:
    # Without the fleet key, a claim that the victim's access key is mallory's.
    forger = FleetKey(parse_fleet_key(bytes(range(1, 33)), source="test"))
    forged = forger.seal_caller(
        sandbox.env["AWS_ACCESS_KEY_ID"],
        f"arn:aws:iam::{sandbox.account_id}:user/{mallory['name']}",
    )
    redis_server.client().set(caller_key(sandbox.env["AWS_ACCESS_KEY_ID"]), forged, px=60_000)
    assert_the_poison_is_not_trusted(sandbox, redis_server, mallory)


def test_two_identities_never_share(sandbox: Sandbox, redis_server: RedisServer) -> None:
    reader, writer = make_role("fleet-reader"), make_role("fleet-writer")
    with rsauth.Broker(shared_cache=shared(redis_server)) as a, rsauth.Broker(
        shared_cache=shared(redis_server)
    ) as b:
        for broker in (a, b):
            for role, user in ((reader, "IAMR:fleet-reader"), (writer, "IAMR:fleet-writer")):
                with broker.connect(workgroup=sandbox.workgroup, role_arn=role) as connection:
                    assert current_user(connection) == user
    assert get_credentials(sandbox) == 2
    assert len(entry_keys(redis_server)) == 2


def test_a_copied_entry_is_rejected(
    sandbox: Sandbox, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = make_role("fleet-reader"), make_role("fleet-writer")
    with rsauth.Broker(shared_cache=shared(redis_server)) as first:
        first.credentials(workgroup=sandbox.workgroup, role_arn=reader)
        [reader_key] = entry_keys(redis_server)
        first.credentials(workgroup=sandbox.workgroup, role_arn=writer)
    [writer_key] = [k for k in entry_keys(redis_server) if k != reader_key]
    client = redis_server.client()
    # Someone with write access to the store puts the reader's entry under the writer's key.
    client.set(writer_key, client.get(reader_key), px=client.pttl(reader_key))
    before = get_credentials(sandbox)
    with rsauth.Broker(shared_cache=shared(redis_server)) as second, second.connect(
        workgroup=sandbox.workgroup, role_arn=writer
    ) as connection:
        assert current_user(connection) == "IAMR:fleet-writer"
    assert get_credentials(sandbox) == before + 1
    assert any("was rejected" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_tampered_entry_is_rejected(sandbox: Sandbox, redis_server: RedisServer) -> None:
    with rsauth.Broker(shared_cache=shared(redis_server)) as first:
        first.credentials(workgroup=sandbox.workgroup)
    [key] = entry_keys(redis_server)
    client = redis_server.client()
    blob = bytearray(client.get(key))
    blob[-20] ^= 0x01
    client.set(key, bytes(blob), px=client.pttl(key))
    with rsauth.Broker(shared_cache=shared(redis_server)) as second:
        assert second.credentials(workgroup=sandbox.workgroup).user == "IAM:sandbox-admin"
    assert get_credentials(sandbox) == 2


def test_another_fleet_key_cannot_read_entries(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    with rsauth.Broker(shared_cache=shared(redis_server)) as first:
        first.credentials(workgroup=sandbox.workgroup)
    other = shared(redis_server, fleet_key=bytes(range(1, 33)))
    with rsauth.Broker(shared_cache=other) as second:
        second.credentials(workgroup=sandbox.workgroup)
    # A different key also means a different store key (HMAC): a second entry, not a clash.
    assert get_credentials(sandbox) == 2
    assert len(entry_keys(redis_server)) == 2


def test_entries_expire_with_the_login(sandbox: Sandbox, redis_server: RedisServer) -> None:
    with rsauth.Broker(shared_cache=shared(redis_server)) as broker:
        credentials = broker.credentials(workgroup=sandbox.workgroup)
    [key] = entry_keys(redis_server)
    left = redis_server.client().pttl(key) / 1000
    assert credentials.expires_in is not None
    # The store's TTL is the login's lifetime counted from the fetch (the sealed expiry is
    # the exact limit): never beyond the lifetime issued, and not far below what the login
    # has left (a minute's margin only guards a stalled run).
    assert left > credentials.expires_in - 60
    assert left <= 900


def test_kms_mode_shares_within_an_identity_only(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    key = boto3.client("kms").create_key(Description="rsauth fleet test")["KeyMetadata"]
    key_id = key["KeyId"]
    # Each identity seals and opens its own entries with its own session (docs/fleet.md).
    may = (
        allow(LOGIN_ACTIONS, WORKGROUPS),
        allow(["kms:GenerateDataKey", "kms:Decrypt"], key["Arn"]),
    )
    reader, writer = make_role("fleet-reader", *may), make_role("fleet-writer", *may)

    def cache() -> rsauth.RedisCache:
        return rsauth.RedisCache(redis_server.url, kms_key_id=key_id)

    with rsauth.Broker(shared_cache=cache()) as a, rsauth.Broker(shared_cache=cache()) as b:
        for broker in (a, b):
            for role, user in ((reader, "IAMR:fleet-reader"), (writer, "IAMR:fleet-writer")):
                with broker.connect(workgroup=sandbox.workgroup, role_arn=role) as connection:
                    assert current_user(connection) == user
        stats = b.stats()
    assert get_credentials(sandbox) == 2
    calls = sandbox.calls()
    assert calls.get("kms.GenerateDataKey", 0) == 2  # one data key per identity
    assert calls.get("kms.Decrypt", 0) == 2  # b opened one entry of each identity
    assert stats.get("kms.Decrypt", 0) == 2
    client = redis_server.client()
    [reader_key, writer_key] = entry_keys(redis_server)
    client.set(writer_key, client.get(reader_key), px=client.pttl(reader_key))
    with rsauth.Broker(shared_cache=cache()) as c:
        users = {
            c.credentials(workgroup=sandbox.workgroup, role_arn=role).user
            for role in (reader, writer)
        }
    assert users == {"IAMR:fleet-reader", "IAMR:fleet-writer"}
    # No caller entries in KMS mode: each worker asks STS who it is.
    assert not client.keys("rsauth:v1:c:*")
    assert sandbox.calls().get("sts.GetCallerIdentity", 0) >= 3


def test_kms_data_keys_stay_out_of_debug_logs(
    sandbox: Sandbox, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    key_id = boto3.client("kms").create_key(Description="rsauth fleet test")["KeyMetadata"]["KeyId"]
    role = make_role("fleet-reader", MAY_LOG_IN)
    caches = [rsauth.RedisCache(redis_server.url, kms_key_id=key_id) for _ in range(2)]
    for cache in caches:  # one GenerateDataKey, then one Decrypt
        with rsauth.Broker(shared_cache=cache) as broker:
            broker.credentials(workgroup=sandbox.workgroup, role_arn=role)
    assert sandbox.calls().get("kms.Decrypt", 0) == 1
    # KmsKey remembers every data key it generated or unwrapped.
    sealers = [cache._sealer for cache in caches if isinstance(cache._sealer, KmsKey)]
    assert len(sealers) == 2
    data_keys = {key for sealer in sealers for key in sealer._opened.values()}
    assert len(data_keys) == 1
    [data_key] = data_keys
    forms = [base64.b64encode(data_key).decode(), repr(data_key)[2:-1], data_key.hex()]
    texts = [record.getMessage() for record in caplog.records]
    assert any("Plaintext" in text for text in texts)  # botocore logged the bodies...
    for form in forms:  # ...with the key masked
        assert not any(form in text for text in texts)
    for cache in caches:
        assert not any(form in repr(cache) for form in forms)


# -- the store down or slow -------------------------------------------------------------


def test_store_down_falls_back_with_one_warning(
    sandbox: Sandbox, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.set_credential_lifetime(2)
    try:
        with rsauth.Broker(shared_cache=shared(redis_server, retry_after=0.2)) as broker:
            broker.connect(workgroup=sandbox.workgroup).close()
            redis_server.stop()
            # Until it has logged in twice more by itself; the deadline only guards a hang.
            deadline = time.monotonic() + 120
            while get_credentials(sandbox) < 3:
                assert time.monotonic() < deadline, "no refresh without the store"
                with broker.connect(workgroup=sandbox.workgroup) as connection:
                    assert current_user(connection) == "IAM:sandbox-admin"
                time.sleep(0.1)
    finally:
        sandbox.set_credential_lifetime(None)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "shared cache" in r.msg]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "is not answering" in warnings[0].getMessage()


def test_a_silent_store_costs_one_timeout(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as silent:
        # Accepts connections (the kernel's backlog) and never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        silent.setblocking(False)
        cache = rsauth.RedisCache(url, fleet_key=FLEET_KEY, timeout=0.2, retry_after=300)
        with rsauth.Broker(shared_cache=cache) as broker:
            broker.credentials(workgroup=sandbox.workgroup)
            first = accept_waiting(silent)
            broker.invalidate()
            broker.credentials(workgroup=sandbox.workgroup)
            second = accept_waiting(silent)
    assert first >= 1  # it tried the store, gave up after its timeout, and logged in
    assert second == 0  # the store is skipped while it is taken to be down
    assert get_credentials(sandbox) == 2
    assert sum("is not answering" in r.getMessage() for r in caplog.records) == 1


def accept_waiting(listener: socket.socket) -> int:
    """Accept (and close) the connections queued on ``listener``; how many there were."""
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


# The ACL docs/fleet.md gives: nothing but rsauth's keys, channels and commands.
FLEET_ACL = (
    "~rsauth:* &rsauth:* +get +set +del +pttl +evalsha +script|load +client|setname "
    "+publish +subscribe"
)


def acl_server(redis_binary: str, permissions: str) -> RedisServer:
    register_secret("fleet-acl-password")
    acl = f"user default off\nuser rsauth on >fleet-acl-password {permissions}\n"
    return RedisServer(redis_binary, config=acl).start()


def acl_url(server: RedisServer) -> str:
    return f"redis://rsauth:fleet-acl-password@127.0.0.1:{server.port}/0"


def test_acl_user_from_the_url(sandbox: Sandbox, redis_binary: str) -> None:
    server = acl_server(redis_binary, FLEET_ACL)
    try:
        url = acl_url(server)
        cache = rsauth.RedisCache(url, fleet_key=FLEET_KEY)
        assert "fleet-acl-password" not in repr(cache)
        with rsauth.Broker(shared_cache=cache) as a, rsauth.Broker(
            shared_cache=rsauth.RedisCache(url, fleet_key=FLEET_KEY)
        ) as b:
            a.credentials(workgroup=sandbox.workgroup)
            b.credentials(workgroup=sandbox.workgroup)
        assert get_credentials(sandbox) == 1
    finally:
        server.cleanup()


def wait_behind_a_slow_fetch(sandbox: Sandbox, url: str, client: Any, waiters: int) -> None:
    """One worker's GetCredentials hangs; ``waiters`` more start once it holds the lease."""
    sandbox.latency(3.0, operation="GetCredentials", count=1)
    brokers = [
        rsauth.Broker(shared_cache=rsauth.RedisCache(url, fleet_key=FLEET_KEY))
        for _ in range(waiters + 1)
    ]
    users: list[str] = []
    errors: list[BaseException] = []

    def work(broker: rsauth.Broker) -> None:
        try:
            users.append(broker.credentials(workgroup=sandbox.workgroup).user)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(broker,)) for broker in brokers]
    try:
        threads[0].start()
        deadline = time.monotonic() + 120  # only guards a hang
        while not client.keys("rsauth:v1:l:*"):
            assert time.monotonic() < deadline, "nobody took the lease"
            time.sleep(0.01)
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for broker in brokers:
            broker.close()
    assert not errors
    assert set(users) == {"IAM:sandbox-admin"}
    assert get_credentials(sandbox) == 1


def test_waiters_subscribe_and_the_holder_wakes_them(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    wait_behind_a_slow_fetch(sandbox, redis_server.url, client, waiters=4)
    commands = client.info("commandstats")
    # Each waiter subscribed to the lease's channel once, instead of polling the store.
    assert commands["cmdstat_subscribe"]["calls"] == 4
    assert commands["cmdstat_publish"]["calls"] >= 1


def test_an_acl_without_channels_means_polling(
    sandbox: Sandbox, redis_binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An ACL from before waiters subscribed: SUBSCRIBE and PUBLISH are refused.
    server = acl_server(
        redis_binary,
        "~rsauth:* +get +set +del +pttl +evalsha +script|load +client|setname\n"
        "user watcher on >fleet-acl-password ~* +keys +info",
    )
    try:
        client = server.client(username="watcher", password="fleet-acl-password")
        wait_behind_a_slow_fetch(sandbox, acl_url(server), client, waiters=4)
        # Each waiter asked to subscribe once, was refused, and polled.
        subscribe = client.info("commandstats")["cmdstat_subscribe"]
        assert (subscribe["calls"], subscribe["rejected_calls"]) == (0, 4)
    finally:
        server.cleanup()
    # A refusal is an answer: the store was never taken to be down.
    assert not [r for r in caplog.records if "not answering" in r.getMessage()]


def test_debug_lines_hold_no_entry(
    sandbox: Sandbox, brokers: list[rsauth.Broker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rsauth")
    for broker in brokers:
        broker.credentials(workgroup=sandbox.workgroup)
    # The autouse scan checks passwords; entries are binary: no rsauth record carries bytes.
    ours = [r for r in caplog.records if r.name == "rsauth"]
    assert any("shared cache" in r.getMessage() for r in ours)
    for record in ours:
        args = record.args if isinstance(record.args, tuple) else ()
        assert not any(isinstance(arg, bytes | bytearray) for arg in args)


# -- expiry sealed in the entry; invalidate() reaches the store ------------------------


def _direct_request(clock: Callable[[], datetime]) -> SharedRequest:
    """A request as the broker makes it, for driving RedisCache without AWS."""
    binding = Binding(
        identity="", region="us-east-1", workgroup="wg", custom_domain=None, database="dev",
        method="iam", duration=900, role_arn=None, db_roles=(), secret_id=None,
    )
    return SharedRequest(
        binding=binding,
        describe="iam login to wg",
        holding=None,
        access_key=lambda: "AKIAFLEETTEST",
        caller_arn=lambda: f"arn:aws:iam::{ACCOUNT}:user/fleet-test",
        kms=lambda: None,
        clock=clock,
    )


def test_an_expired_entry_set_again_with_a_fresh_ttl_is_refused(
    redis_server: RedisServer,
) -> None:
    now = [datetime(2030, 1, 1, tzinfo=timezone.utc)]
    fetched: list[Login] = []

    def fetch() -> Lease[Login]:
        login = Login(
            user="IAM:fleet-test", password=f"fleet-pw-{len(fetched)}", method="iam",
            expires_at=now[0] + timedelta(seconds=900),
        )
        fetched.append(login)
        return Lease(login, lifetime=900.0)

    first = shared(redis_server).fetch(_direct_request(lambda: now[0]), fetch)
    [key] = entry_keys(redis_server)
    client = redis_server.client()
    blob = client.get(key)
    # The login has expired; someone who can write to the store (but holds no key)
    # puts its entry back with ten fresh minutes.
    now[0] += timedelta(seconds=1000)
    client.set(key, blob, px=600_000)
    second = shared(redis_server).fetch(_direct_request(lambda: now[0]), fetch)
    assert second.value.password != first.value.password
    assert len(fetched) == 2


def test_an_entry_lives_no_longer_than_its_sealed_expiry(redis_server: RedisServer) -> None:
    now = [datetime(2030, 1, 1, tzinfo=timezone.utc)]

    def fetch() -> Lease[Login]:
        login = Login(
            user="IAM:fleet-test", password="fleet-pw", method="iam",
            expires_at=now[0] + timedelta(seconds=900),
        )
        return Lease(login, lifetime=900.0)

    shared(redis_server).fetch(_direct_request(lambda: now[0]), fetch)
    [key] = entry_keys(redis_server)
    client = redis_server.client()
    now[0] += timedelta(seconds=300)
    client.pexpire(key, 900_000)  # the store claims the whole lifetime is still left
    lease = shared(redis_server).fetch(_direct_request(lambda: now[0]), fetch)
    assert lease.lifetime is not None
    assert lease.lifetime <= 600.0


def test_invalidate_removes_the_shared_entries_too(
    sandbox: Sandbox, brokers: list[rsauth.Broker]
) -> None:
    first, second, third = brokers
    first.credentials(workgroup=sandbox.workgroup)
    first.credentials(workgroup=sandbox.workgroup, method="secret")
    assert len(entry_keys_of(first)) == 2
    assert first.invalidate(workgroup=sandbox.workgroup, method="iam") == 1
    assert len(set(entry_keys_of(first))) == 1  # the secret's entry stays
    second.credentials(workgroup=sandbox.workgroup)
    assert get_credentials(sandbox) == 2  # the store no longer had the login
    # Without arguments: every entry of a login this worker published or used.
    second.invalidate()
    assert len(entry_keys_of(second)) == 1  # the secret's, which only the first one used
    first.invalidate()
    assert entry_keys_of(first) == []
    third.credentials(workgroup=sandbox.workgroup, method="secret")
    assert sandbox.calls().get("secretsmanager.GetSecretValue", 0) == 2


def entry_keys_of(broker: rsauth.Broker) -> list[bytes]:
    cache = broker._shared
    assert cache is not None
    client = cache._store._redis()
    return sorted(client.keys("rsauth:v1:e:*"))


# -- sessions of one role with different database roles ---------------------------------

def tagged_session(role: str, name: str, db_roles: str) -> boto3.Session:
    """A real AssumeRole session of ``role`` tagged ``RedshiftDbRoles=db_roles``."""
    credentials = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
        RoleSessionName=name,
        Tags=[{"Key": "RedshiftDbRoles", "Value": db_roles}],
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


@pytest.fixture
def team_role(sandbox: Sandbox) -> str:
    """One IAM role whose sessions carry different database roles: alice's can read the
    payroll table, bob's cannot."""
    make_role("fleet-team", MAY_LOG_IN)
    sandbox.sql(
        "DO $$ BEGIN "
        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleet_payroll') "
        "THEN CREATE ROLE fleet_payroll; END IF; "
        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleet_staff') "
        "THEN CREATE ROLE fleet_staff; END IF; END $$; "
        "CREATE TABLE IF NOT EXISTS fleet_salaries (amount int); "
        "GRANT SELECT ON fleet_salaries TO fleet_payroll"
    )
    return "fleet-team"


def reads_salaries(connection: Any) -> bool:
    cursor = connection.cursor()
    refused = ""
    try:
        cursor.execute("select count(*) from fleet_salaries")
        cursor.fetchall()
    except Exception as exc:
        refused = str(exc)
        connection.rollback()
    finally:
        cursor.close()
    assert not refused or "permission denied" in refused
    return not refused


def test_sessions_of_one_role_with_different_tags_never_share(
    sandbox: Sandbox, redis_server: RedisServer, team_role: str
) -> None:
    alice = tagged_session(team_role, "alice", "fleet_payroll")
    bob = tagged_session(team_role, "bob", "fleet_staff")
    with rsauth.Broker(alice, shared_cache=shared(redis_server)) as broker, broker.connect(
        workgroup=sandbox.workgroup
    ) as connection:
        assert current_user(connection) == "IAMR:fleet-team"
        assert reads_salaries(connection)
        alices = broker.credentials(workgroup=sandbox.workgroup).password
    with rsauth.Broker(bob, shared_cache=shared(redis_server)) as broker, broker.connect(
        workgroup=sandbox.workgroup
    ) as connection:
        assert current_user(connection) == "IAMR:fleet-team"
        same_login = broker.credentials(workgroup=sandbox.workgroup).password == alices
        assert not same_login
        assert not reads_salaries(connection)
    assert get_credentials(sandbox) == 2
    assert len(entry_keys(redis_server)) == 2


def test_sharing_across_sessions_of_a_role_is_an_opt_in(
    sandbox: Sandbox, redis_server: RedisServer, team_role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # For fleets whose sessions all carry the same tags (an instance or task role).
    first = tagged_session(team_role, "i-0aaa", "fleet_staff")
    second = tagged_session(team_role, "i-0bbb", "fleet_staff")
    monkeypatch.setenv("RSAUTH_SHARED_CACHE_SHARE_ROLE_SESSIONS", "true")
    passwords = set()
    for session, cache in (
        (first, shared(redis_server, environ=dict(os.environ))),
        (second, shared(redis_server, share_role_sessions=True)),
    ):
        with rsauth.Broker(session, shared_cache=cache) as broker:
            passwords.add(broker.credentials(workgroup=sandbox.workgroup).password)
    assert len(passwords) == 1
    assert get_credentials(sandbox) == 1


def test_the_documented_fleet_kms_policy_is_exactly_enough(
    sandbox: Sandbox, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An identity holding exactly the documented fleet-mode policy (rendered by
    rsauth._policies) seals its entry in the store; without kms:GenerateDataKey it still
    logs in (the store never breaks a connect) but says at WARNING which action KMS
    refused, and nothing is shared."""
    key = boto3.client("kms").create_key(Description="rsauth fleet policy")["KeyMetadata"]
    plane = boto3.client("redshift-serverless")
    workgroup = plane.get_workgroup(workgroupName=sandbox.workgroup)["workgroup"]
    target = Target(region=sandbox.region, account=ACCOUNT, workgroup_id=workgroup["workgroupId"])
    policy = login_policy("iam", target, fleet_kms_key_arn=key["Arn"])

    def log_in(statements: list[dict[str, Any]]) -> list[str]:
        name = f"fleet-least-{uuid.uuid4().hex[:8]}"
        keys = make_user(name, *statements)
        cache = rsauth.RedisCache(redis_server.url, kms_key_id=key["KeyId"])
        session = boto3.session.Session(**keys)  # type: ignore[arg-type]
        with rsauth.Broker(session=session, shared_cache=cache) as broker:
            assert broker.credentials(workgroup=sandbox.workgroup).user == f"IAM:{name}"
        return [
            r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("rsauth")
        ]

    before = set(entry_keys(redis_server))
    assert log_in(policy["Statement"]) == []
    assert len(set(entry_keys(redis_server)) - before) == 1, "the entry went to the store"
    for action in ("kms:GenerateDataKey",):  # Decrypt is first needed by another worker
        caplog.clear()
        smaller = [
            {**s, "Action": [a for a in s["Action"] if a != action]}
            if s["Sid"] == "FleetKeys" else s
            for s in policy["Statement"]
        ]
        before = set(entry_keys(redis_server))
        warnings = log_in(smaller)
        assert any(action in w for w in warnings), warnings
        assert set(entry_keys(redis_server)) == before, "nothing shared without the key"
