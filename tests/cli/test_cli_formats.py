"""Each output format escapes what its consumer needs (no sandbox: pure functions)."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import re
import ssl
import subprocess
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from redshift_connector.error import ProgrammingError

from rsauth import ConfigurationError, Credentials, IamRoleError
from rsauth._cli._context import CommandError, ca_file, cli_wording
from rsauth._cli._doctor import _ASCII, _SYMBOLS, _symbols
from rsauth._cli._formats import format_credentials, format_rows
from rsauth._errors import python_only
from rsauth.etl import _load_error

NASTY_PASSWORD = "p:a\\s's$w\"o`r d!%#@/?&=;x"


def credentials(password: str = NASTY_PASSWORD, **changes: object) -> Credentials:
    fields: dict[str, object] = {
        "user": "IAM:alice",
        "password": password,
        "host": "wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com",
        "port": 5439,
        "database": "dev",
        "workgroup": "wg",
        "method": "iam",
        "expires_at": dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=600),
    }
    fields.update(changes)
    return Credentials(**fields)  # type: ignore[arg-type]


def test_table_masks_the_password_and_shows_the_expiry() -> None:
    text = format_credentials(credentials(), "table", sslrootcert=None)
    assert NASTY_PASSWORD not in text
    assert "[secure]" in text
    assert "IAM:alice" in text
    assert re.search(r"expires +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ min \d+ s\)", text)


def test_env_survives_a_shell_eval_with_any_password() -> None:
    text = format_credentials(credentials(), "env", sslrootcert="/tmp/ca dir/ca.pem")
    show = 'printf "%s\\0" "$PGUSER" "$PGPASSWORD" "$PGSSLMODE" "$PGSSLROOTCERT" "$PGPORT"'
    script = f"{text}\n{show}"
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:5] == [
        "IAM:alice", NASTY_PASSWORD, "verify-full", "/tmp/ca dir/ca.pem", "5439"
    ]


def test_env_and_uri_name_the_drivers_ca_file_when_none_is_given() -> None:
    bundle = ca_file({})
    assert bundle is not None
    env = format_credentials(credentials(), "env", sslrootcert=None)
    assert f"export PGSSLROOTCERT={bundle}" in env.splitlines()
    assert "export PGSSLMODE=verify-full" in env.splitlines()
    uri = format_credentials(credentials(), "uri", sslrootcert=None)
    assert parse_qs(urlsplit(uri).query)["sslrootcert"] == [bundle]


def test_uri_percent_encodes_user_password_and_parameters() -> None:
    text = format_credentials(credentials(), "uri", sslrootcert="/ca dir/ca.pem")
    parts = urlsplit(text)
    assert parts.scheme == "postgresql"
    assert "IAM%3Aalice" in text
    assert unquote(parts.username or "") == "IAM:alice"
    assert unquote(parts.password or "") == NASTY_PASSWORD
    assert parts.hostname == "wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com"
    assert parts.port == 5439
    assert parts.path == "/dev"
    assert parse_qs(parts.query) == {"sslmode": ["verify-full"], "sslrootcert": ["/ca dir/ca.pem"]}


def _pgpass_fields(line: str) -> list[str]:
    """Split a .pgpass line the way libpq does: ``\\`` escapes the next character."""
    fields, current, escaped = [], "", False
    for char in line:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(current)
            current = ""
        else:
            current += char
    return [*fields, current]


def test_pgpass_escapes_colons_and_backslashes() -> None:
    password = "a:b\\c"
    text = format_credentials(credentials(password), "pgpass", sslrootcert=None)
    assert text.count("\n") == 0
    assert "IAM\\:alice" in text
    assert _pgpass_fields(text) == [
        "wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com",
        "5439",
        "dev",
        "IAM:alice",
        password,
    ]


@pytest.mark.parametrize("fmt", ["env", "uri", "pgpass"])
@pytest.mark.parametrize("field", ["user", "password", "host", "database"])
@pytest.mark.parametrize("bad", ["\n", "\r", "\0", "\t", "\x1b", "\x7f", "\x85"])
def test_machine_formats_refuse_control_characters_naming_the_field(
    fmt: str, field: str, bad: str
) -> None:
    value = f"x{bad}injected"
    with pytest.raises(CommandError) as caught:
        format_credentials(credentials(**{field: value}), fmt, sslrootcert=None)
    message = str(caught.value)
    assert field in message
    assert fmt in message
    assert "injected" not in message


def test_machine_formats_refuse_a_control_character_in_the_root_certificate_path() -> None:
    with pytest.raises(CommandError, match="sslrootcert"):
        format_credentials(credentials(), "env", sslrootcert="/tmp/ca\n.pem")


def test_json_carries_everything_a_program_needs() -> None:
    data = json.loads(format_credentials(credentials(), "json", sslrootcert="/ca.pem"))
    assert data["password"] == NASTY_PASSWORD
    assert data["user"] == "IAM:alice"
    assert data["sslmode"] == "verify-full"
    assert data["sslrootcert"] == "/ca.pem"
    assert 590 <= data["expires_in"] <= 600
    assert dt.datetime.fromisoformat(data["expires_at"]).tzinfo is not None


def test_a_login_without_expiry_says_so() -> None:
    text = format_credentials(credentials(expires_at=None, method="secret"), "table",
                              sslrootcert=None)
    assert "does not expire" in text
    assert json.loads(format_credentials(credentials(expires_at=None), "json",
                                         sslrootcert=None))["expires_in"] is None


def test_rows_as_a_table_align_numbers_and_show_null() -> None:
    text = format_rows(["name", "n", "z"], [["a", 1, None], ["bbb", 10, None]], "table")
    assert text.splitlines() == [
        "name |  n | z",
        "-----+----+-----",
        "a    |  1 | NULL",
        "bbb  | 10 | NULL",
        "(2 rows)",
    ]


def test_rows_as_csv_quote_what_needs_quoting() -> None:
    text = format_rows(["s", "n"], [["x,y", 1], ['say "hi"', None]], "csv")
    assert text.splitlines() == ["s,n", '"x,y",1', '"say ""hi""",']


def test_rows_as_json_keep_every_digit_and_name_duplicates() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    text = format_rows(["a", "a", "t", "d"], [[decimal.Decimal("1.10"), 2, when, None]], "json")
    assert json.loads(text) == [
        {"a": "1.10", "a_2": 2, "t": "2026-01-02T03:04:05+00:00", "d": None}
    ]


def test_repr_html_masks_the_password_escapes_and_shows_time_left() -> None:
    creds = credentials(user="IAM:<script>alert(1)</script>")
    page = creds._repr_html_()
    assert NASTY_PASSWORD not in page
    assert "[secure]" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert re.search(r"\(in \d+ min \d+ s\)", page)
    expired = credentials(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=90))
    assert "expired 1 min" in expired._repr_html_()


def test_messages_name_command_line_options() -> None:
    assert cli_wording("role_arn='x' needs workgroup= or custom_domain=") == (
        "--role-arn x needs --workgroup or --custom-domain"
    )
    assert cli_wording("pass user= and password=") == "pass user= and password="
    assert cli_wording("iam_role='a b' or method='secret'") == "--iam-role 'a b' or --method secret"


def test_python_only_advice_is_left_out_of_the_cli() -> None:
    error = ConfigurationError(f"no AWS region: pass region=, {python_only('Broker(region=), ')}"
                               "set AWS_REGION")
    assert str(error) == "no AWS region: pass region=, Broker(region=), set AWS_REGION"
    assert cli_wording(error) == "no AWS region: pass --region, set AWS_REGION"
    assert "\x0e" not in repr(error)


def test_a_failed_load_tells_python_to_roll_back_and_the_cli_nothing_it_cannot_do() -> None:
    failed = ProgrammingError({"C": "42P01", "M": 'relation "sales" does not exist'})
    error = _load_error(failed, "COPY into sales")
    assert "roll back before the next statement" in str(error)
    assert "roll back" not in cli_wording(error)
    assert cli_wording(error).startswith('COPY into sales failed: relation "sales" does not exist')


def test_a_refused_role_names_the_trust_policy() -> None:
    refused = ProgrammingError({"C": "XX000", "M": "Not authorized to get credentials of role "
                                "arn:aws:iam::123456789012:role/etl"})
    error = _load_error(refused, "COPY into sales")
    assert isinstance(error, IamRoleError)
    assert "trust policy" in str(error)
    assert "redshift.amazonaws.com" in str(error)


@pytest.mark.parametrize(("encoding", "expected"), [("utf-8", _SYMBOLS), ("ascii", _ASCII)])
def test_doctor_falls_back_to_ascii_marks(encoding: str, expected: dict[str, str]) -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    assert _symbols(stream) is expected


def test_libpq_gets_ssl_cert_file_or_the_redshift_bundle() -> None:
    assert ca_file({"SSL_CERT_FILE": "/etc/my-ca.pem"}) == "/etc/my-ca.pem"
    bundle = ca_file({})
    assert bundle is not None
    assert bundle.endswith("redshift-ca-bundle.crt")
    assert "Amazon Root CA 1" in ssl_subjects(bundle)


def ssl_subjects(path: str) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(path)
    return repr([cert["subject"] for cert in context.get_ca_certs()])
