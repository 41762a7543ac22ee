"""Credential sources: parsing AWS answers, lifetimes by the server's clock, secret JSON."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from rsauth import ConfigurationError
from rsauth._aws import as_utc, server_time
from rsauth._sources import Login
from rsauth._sources.iam import IamSource, lease_from_response
from rsauth._sources.secret import parse_secret
from rsauth._sources.superuser import SuperuserSource

from .conftest import FakeClock


def response(expiration: object, date: datetime | None) -> dict[str, object]:
    headers = {"date": format_datetime(date, usegmt=True)} if date else {}
    return {
        "dbUser": "IAM:alice",
        "dbPassword": "pw-1",
        "expiration": expiration,
        "ResponseMetadata": {"HTTPHeaders": headers},
    }


def test_lifetime_from_the_servers_date_not_the_local_clock(clock: FakeClock) -> None:
    server_now = clock.now + timedelta(hours=2)  # server two hours ahead of us
    lease = lease_from_response(
        response(server_now + timedelta(seconds=900), server_now),
        method="iam",
        issued_local=clock.now,
    )
    assert lease.lifetime == pytest.approx(899)  # minus the Date header's one-second resolution
    # On the local clock: 899 s from when the request was sent, not the server's 2 h ahead.
    assert lease.value.expires_at == clock.now + timedelta(seconds=899)


def test_lifetime_falls_back_to_the_local_clock(clock: FakeClock) -> None:
    lease = lease_from_response(
        response(clock.now + timedelta(seconds=3600), None), method="iam", issued_local=clock.now
    )
    assert lease.lifetime == pytest.approx(3600)
    assert lease.value.expires_at == clock.now + timedelta(seconds=3600)


def test_expiration_as_epoch_seconds_becomes_aware_utc() -> None:
    moment = as_utc(1_900_000_000)
    assert moment.tzinfo is not None
    assert moment == datetime.fromtimestamp(1_900_000_000, tz=timezone.utc)
    assert as_utc("1900000000") == moment
    assert as_utc(datetime(2030, 1, 1)).tzinfo == timezone.utc


def test_server_time_missing_or_garbled() -> None:
    assert server_time({}) is None
    assert server_time({"ResponseMetadata": {"HTTPHeaders": {"date": "yesterday"}}}) is None


def test_login_repr_hides_the_password(clock: FakeClock) -> None:
    lease = lease_from_response(
        response(clock.now + timedelta(seconds=900), None), method="iam", issued_local=clock.now
    )
    assert "pw-1" not in repr(lease)
    assert "IAM:alice" in repr(lease)


def test_a_login_is_read_only_and_compared_by_identity() -> None:
    login = Login("IAM:alice", "pw-1", "iam")
    with pytest.raises(AttributeError):
        login.password = "x"
    with pytest.raises(AttributeError):
        del login.user
    assert login != Login("IAM:alice", "pw-1", "iam")
    assert len({login, Login("IAM:alice", "pw-1", "iam")}) == 2
    later = login.with_expiry(datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert (later.user, later.password, later.method) == ("IAM:alice", "pw-1", "iam")
    assert later.expires_at == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert login.expires_at is None
    copied = copy.copy(later)  # rebuilt through __init__, a login of its own
    assert copied is not later
    assert (copied.user, copied.password, copied.expires_at) == (
        "IAM:alice", "pw-1", later.expires_at
    )


def test_iam_request_always_sends_db_name_and_duration(clock: FakeClock) -> None:
    def source(**where: str | None) -> IamSource:
        return IamSource(
            None,  # type: ignore[arg-type]  # request() makes no call
            workgroup=where.get("workgroup"),
            custom_domain=where.get("custom_domain"),
            database="dev",
            duration=900,
            context=None,  # type: ignore[arg-type]
            clock=clock,
        )

    assert source(workgroup="analytics").request() == {
        "workgroupName": "analytics",
        "dbName": "dev",
        "durationSeconds": 900,
    }
    assert source(custom_domain="db.example.com").request() == {
        "customDomainName": "db.example.com",
        "dbName": "dev",
        "durationSeconds": 900,
    }


def test_source_names() -> None:
    assert IamSource.METHOD == "iam"
    assert SuperuserSource.METHOD == "superuser"


def test_secret_json_with_hints() -> None:
    login = parse_secret(
        '{"username": "admin", "password": "pw", "host": "h", "port": 5440, "dbname": "sales"}',
        secret_id="s",
        version_id="v1",
    )
    assert (login.user, login.host, login.port, login.database, login.version_id) == (
        "admin",
        "h",
        5440,
        "sales",
        "v1",
    )


@pytest.mark.parametrize(
    "text",
    [None, "", "not json", '["list"]', '{"username": "admin"}', '{"password": "hunter2"}'],
)
def test_malformed_secret_names_the_secret_never_the_value(text: str | None) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_secret(text, secret_id="app-login", version_id=None)
    assert "app-login" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"host": "db.example.com\n*"}, "host"),
        ({"host": "db example.com"}, "host"),
        ({"host": "dé.example.com"}, "host"),
        ({"host": 42}, "host"),
        ({"port": "²"}, "port"),
        ({"port": "٥٤٣٩"}, "port"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"port": "5439\n"}, "port"),
        ({"dbname": "dev\nx"}, "dbname"),
        ({"dbname": "d" * 128}, "dbname"),
        ({"username": "ad\nmin"}, "username"),
        ({"password": "pw\nhunter2"}, "password"),
    ],
)
def test_a_secret_field_outside_the_rules_is_refused_naming_the_key_never_the_value(
    extra: dict[str, object], key: str
) -> None:
    import json

    data: dict[str, object] = {"username": "admin", "password": "hunter2", **extra}
    with pytest.raises(ConfigurationError) as info:
        parse_secret(json.dumps(data), secret_id="app-login", version_id=None)
    message = str(info.value)
    assert "app-login" in message
    assert repr(key) in message
    assert "hunter2" not in message
    for value in extra.values():
        assert str(value) not in message


def test_a_secret_with_an_ip_address_and_a_port_string_is_accepted() -> None:
    login = parse_secret(
        '{"username": "admin", "password": "pw", "host": "10.0.0.5", "port": "5439"}',
        secret_id="s", version_id=None,
    )
    assert (login.host, login.port) == ("10.0.0.5", 5439)


def _secret(**fields: object) -> str:
    return json.dumps({"username": "admin", "password": "pw-1", **fields})


@pytest.mark.parametrize("port", [1, 65535, "1", "65535"])
def test_secret_ports_at_both_ends_are_taken(port: object) -> None:
    assert parse_secret(_secret(port=port), secret_id="s", version_id=None).port == int(
        str(port)
    )


@pytest.mark.parametrize("port", [0, 65536, "0", "65536", True, "\uff18"])
def test_secret_ports_outside_are_refused_by_name(port: object) -> None:
    with pytest.raises(ConfigurationError, match="'port' is not a TCP port"):
        parse_secret(_secret(port=port), secret_id="s", version_id=None)


@pytest.mark.parametrize(
    "fields",
    [{"username": ""}, {"password": ""}, {"username": "", "password": ""}, {"username": 7}],
)
def test_a_secret_needs_both_user_and_password(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="needs string fields") as raised:
        parse_secret(_secret(**fields), secret_id="s", version_id=None)
    assert "it has: password, username" in str(raised.value)


def test_empty_host_and_dbname_mean_not_given() -> None:
    login = parse_secret(_secret(host="", dbname=""), secret_id="s", version_id=None)
    assert (login.host, login.database) == (None, None)


def test_a_bad_host_in_a_secret_is_named_not_shown() -> None:
    with pytest.raises(ConfigurationError, match="its 'host' is not a DNS name") as raised:
        parse_secret(_secret(host="bad host\n"), secret_id="s", version_id=None)
    assert "bad host" not in str(raised.value)


@pytest.mark.parametrize("text", ["[]", "not json", None])
def test_a_secret_that_is_no_json_object_says_what_is_expected(text: str | None) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_secret(text, secret_id="app-login", version_id=None)
    assert str(info.value) == (
        "secret 'app-login' is not a JSON object; rsauth expects "
        '{"username": ..., "password": ...} (optionally host, port, dbname)'
    )


def test_an_empty_secret_object_says_it_has_no_fields() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_secret("{}", secret_id="app-login", version_id=None)
    assert str(info.value).endswith("it has: no fields")


def test_a_bad_port_says_what_a_port_is() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_secret(
            '{"username": "app", "password": "pw-app", "port": "x"}',
            secret_id="app-login",
            version_id=None,
        )
    assert str(info.value) == (
        "secret 'app-login': its 'port' is not a TCP port (a whole number from 1 to 65535, "
        "or a string of its digits); fix the secret's JSON"
    )
