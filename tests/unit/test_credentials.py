"""Credentials: a frozen value whose password shows only when asked for."""

from __future__ import annotations

import dataclasses
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from rsauth import Credentials

from .conftest import FakeClock

PASSWORD = "p@ss:w/rd?#%&"


def make(clock: FakeClock | None = None, **changes: object) -> Credentials:
    fields: dict[str, object] = {
        "user": "IAM:alice",
        "password": PASSWORD,
        "host": "analytics.123456789012.us-east-1.redshift-serverless.amazonaws.com",
        "port": 5439,
        "database": "dev",
        "workgroup": "analytics",
        "method": "iam",
        "expires_at": datetime(2030, 1, 1, 12, 15, tzinfo=timezone.utc),
    }
    fields.update(changes)
    if clock is not None:
        return Credentials(**fields, _clock=clock)  # type: ignore[arg-type]
    return Credentials(**fields)  # type: ignore[arg-type]


def test_repr_and_str_mask_the_password() -> None:
    credentials = make()
    for text in (repr(credentials), str(credentials), f"{credentials}"):
        assert PASSWORD not in text
        assert "[secure]" in text
        assert "IAM:alice" in text


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().password = "x"  # type: ignore[misc]


def test_as_dict_leaves_the_password_out_unless_asked() -> None:
    credentials = make()
    assert "password" not in credentials.as_dict()
    assert PASSWORD not in str(credentials.as_dict())
    assert credentials.as_dict(include_password=True)["password"] == PASSWORD
    assert credentials.as_dict()["user"] == "IAM:alice"


def test_sqlalchemy_url_percent_encodes_and_hides_the_password() -> None:
    credentials = make()
    url = credentials.sqlalchemy_url()
    assert url.startswith("redshift+redshift_connector://IAM%3Aalice@")
    assert "p%40ss" not in url
    assert ":5439/dev" in url
    with_password = credentials.sqlalchemy_url(include_password=True)
    assert "IAM%3Aalice:p%40ss%3Aw%2Frd%3F%23%25%26@" in with_password


def test_sqlalchemy_url_round_trips_through_a_parser() -> None:
    from urllib.parse import unquote, urlsplit

    url = make().sqlalchemy_url(include_password=True)
    # urllib does not accept "_" in a scheme; SQLAlchemy does. Parse the rest.
    parts = urlsplit(url.replace("redshift+redshift_connector://", "redshift://", 1))
    assert unquote(parts.username or "") == "IAM:alice"
    assert unquote(parts.password or "") == PASSWORD
    assert parts.port == 5439


def test_as_env_is_all_strings_with_verify_full() -> None:
    env = make().as_env(environ={})
    assert all(isinstance(value, str) for value in env.values())
    assert env["PGPORT"] == "5439"
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGPASSWORD"] == PASSWORD


def test_as_env_without_ssl_cert_file_names_the_amazon_roots_the_driver_trusts() -> None:
    """libpq has no default root: without PGSSLROOTCERT, verify-full cannot work at all."""
    ca_file = Path(make().as_env(environ={})["PGSSLROOTCERT"])
    assert ca_file.is_file()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(ca_file))
    subjects = [repr(cert["subject"]) for cert in context.get_ca_certs()]
    root = ("('countryName', 'US'),), (('organizationName', 'Amazon'),), "
            "(('commonName', 'Amazon Root CA 1'),)")
    assert any(root in subject for subject in subjects)


def test_as_env_names_the_ca_file_when_known() -> None:
    assert make().as_env(environ={"SSL_CERT_FILE": "/tmp/ca.pem"})["PGSSLROOTCERT"] == "/tmp/ca.pem"
    assert make().as_env(sslrootcert="/ca.pem", environ={})["PGSSLROOTCERT"] == "/ca.pem"


def test_expires_in_uses_the_clock(clock: FakeClock) -> None:
    credentials = make(clock, expires_at=clock.now + timedelta(seconds=900))
    assert credentials.expires_in == pytest.approx(900)
    clock.advance(1000)
    assert credentials.expires_in == pytest.approx(-100)


def test_no_expiry() -> None:
    credentials = make(expires_at=None, method="secret")
    assert credentials.expires_in is None


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make(expires_at=datetime(2030, 1, 1))


def test_equality_ignores_the_clock(clock: FakeClock) -> None:
    assert make(clock) == make()
