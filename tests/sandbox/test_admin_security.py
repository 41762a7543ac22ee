"""The admin API refuses what a web page or another local program could send it.

The attack: a page the user visits POSTs ``text/plain`` (no CORS preflight) to
the loopback admin port, or rebinds a DNS name to 127.0.0.1, and calls ``sql``
(``COPY ... TO PROGRAM`` runs commands as the database superuser) or
``issued_passwords``. Each test sends one such request and checks that the
``sql`` operation never ran: the table it would create does not exist.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid

import pytest

from rsauth.sandbox import Sandbox


def _split(admin_url: str) -> tuple[int, str]:
    url = urllib.parse.urlsplit(admin_url)
    assert url.port is not None
    return url.port, url.path.strip("/")


def _post(
    port: int, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        # skip_host: the tests set Host themselves (or leave it out on purpose).
        connection.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _table_exists(sandbox: Sandbox, table: str) -> bool:
    rows = sandbox.sql(f"select to_regclass('public.{table}') is not null")
    return rows == [["t"]]


@pytest.fixture
def attack(sandbox: Sandbox) -> tuple[int, str, str, bytes]:
    """The admin port, its token, a fresh table name and a ``sql`` body creating it."""
    port, token = _split(sandbox.admin_url)
    table = f"pwned_{uuid.uuid4().hex[:12]}"
    body = json.dumps({"statement": f"create table {table} (x int)"}).encode()
    return port, token, table, body


def test_the_admin_url_carries_a_long_random_token(sandbox: Sandbox) -> None:
    _, token = _split(sandbox.admin_url)
    assert len(token) >= 43  # secrets.token_urlsafe(32)
    assert "/" not in token


def test_a_correct_request_still_runs(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    port, token, table, body = attack
    status, _ = _post(
        port, f"/{token}/sql", body,
        {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"},
    )
    assert status == 200
    assert _table_exists(sandbox, table)
    sandbox.sql(f"drop table {table}")


def test_a_text_plain_post_without_token_is_refused(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    port, _, table, body = attack
    status, _ = _post(
        port, "/sql", body, {"Host": f"127.0.0.1:{port}", "Content-Type": "text/plain"}
    )
    assert status in (403, 404, 415)
    assert not _table_exists(sandbox, table)


def test_a_wrong_token_is_refused(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    port, token, table, body = attack
    wrong = ("A" if token[0] != "A" else "B") + token[1:]
    for path in (f"/{wrong}/sql", "/sql", f"/{token[:-1]}/sql", f"/{token}x/sql"):
        status, answer = _post(
            port, path, body,
            {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"},
        )
        assert status == 403, path
        assert token.encode() not in answer
    assert not _table_exists(sandbox, table)


def test_the_right_token_as_text_plain_is_refused(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    port, token, table, body = attack
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {"Host": f"127.0.0.1:{port}"}
        if content_type:
            headers["Content-Type"] = content_type
        status, _ = _post(port, f"/{token}/sql", body, headers)
        assert status == 415, content_type
    assert not _table_exists(sandbox, table)


def test_any_origin_is_refused_even_with_the_token(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    port, token, table, body = attack
    for origin in ("http://evil.example", f"http://127.0.0.1:{port}", "null"):
        status, _ = _post(
            port, f"/{token}/sql", body,
            {
                "Host": f"127.0.0.1:{port}",
                "Content-Type": "application/json",
                "Origin": origin,
            },
        )
        assert status == 403, origin
    assert not _table_exists(sandbox, table)


def test_a_rebound_host_name_is_refused_even_with_the_token(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    """DNS rebinding: the browser resolves evil.example to 127.0.0.1 but sends its name."""
    port, token, table, body = attack
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", None):
        headers = {"Content-Type": "application/json"}
        if host is not None:
            headers["Host"] = host
        status, _ = _post(port, f"/{token}/sql", body, headers)
        assert status == 403, host
    assert not _table_exists(sandbox, table)


def test_localhost_by_name_is_accepted(
    sandbox: Sandbox, attack: tuple[int, str, str, bytes]
) -> None:
    port, token, table, body = attack
    status, _ = _post(
        port, f"/{token}/sql", body,
        {"Host": f"localhost:{port}", "Content-Type": "application/json"},
    )
    assert status == 200
    assert _table_exists(sandbox, table)
    sandbox.sql(f"drop table {table}")


def test_issued_passwords_need_the_token(sandbox: Sandbox) -> None:
    port, token = _split(sandbox.admin_url)
    passwords = {entry["password"] for entry in sandbox.issued_passwords()}
    assert passwords, "the admin secret's password is always issued"
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    for path in ("/issued_passwords", f"/{token[::-1]}/issued_passwords"):
        status, answer = _post(port, path, b"{}", headers)
        assert status == 403
        assert not any(password.encode() in answer for password in passwords)
    status, answer = _post(port, f"/{token}/issued_passwords", b"{}", headers)
    assert status == 200
    assert any(password.encode() in answer for password in passwords)


def test_an_unknown_operation_lists_the_operations_only_with_the_token(
    sandbox: Sandbox,
) -> None:
    port, token = _split(sandbox.admin_url)
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    status, answer = _post(port, "/nope", b"{}", headers)
    assert status == 403
    assert b"issued_passwords" not in answer
    status, answer = _post(port, f"/{token}/nope", b"{}", headers)
    assert status == 404
    assert "issued_passwords" in json.loads(answer)["operations"]
