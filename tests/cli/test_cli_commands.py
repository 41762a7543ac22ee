"""Every ``rsauth`` subcommand and format, run as a child process against the sandbox."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from rsauth._cli import main
from rsauth.sandbox import Sandbox
from tests._iam import make_role
from tests.cli.conftest import Cli
from tests.conftest import secrets_of

PSQL = shutil.which("psql")
needs_psql = pytest.mark.skipif(PSQL is None, reason="the PostgreSQL client is not installed")


def issued(sandbox: Sandbox) -> set[str]:
    return {entry["password"] for entry in sandbox.issued_passwords()}


def assert_no_secret(sandbox: Sandbox, *texts: str) -> None:
    for secret in secrets_of(sandbox):
        for text in texts:
            assert secret not in text


# -- the command itself ----------------------------------------------------------------------


def test_version_and_the_console_script(cli: Cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("rsauth 0.1")
    script = Path(sys.executable).with_name("rsauth")
    assert script.exists(), "the [project.scripts] entry point is installed"
    by_script = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                               check=True, timeout=60)
    assert by_script.stdout == result.stdout


@pytest.mark.parametrize("command", ["credentials", "sql", "psql", "whoami", "doctor"])
def test_every_subcommand_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: rsauth {command}" in out
    assert "examples:" in out
    assert "--workgroup" in out


def test_top_level_help_lists_the_subcommands(cli: Cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("credentials", "sql", "psql", "whoami", "doctor", "sandbox"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "the following arguments are required"),
        (["bogus"], {}, "invalid choice: 'bogus'"),
        (["credentials", "--format", "yaml"], {}, "invalid choice: 'yaml'"),
        (["credentials", "--method", "kerberos"], {}, "invalid choice: 'kerberos'"),
        (["credentials", "--duration", "60"], {}, "--duration 60: expected a whole number"),
        (["whoami"], {"RSAUTH_METHOD": "bogus"}, "RSAUTH_METHOD='bogus': unknown login method"),
        (["credentials", "--workgroup", "Bad_Name"], {}, "--workgroup Bad_Name:"),
        (["psql", "-c", "select 1"], {}, "put psql's own arguments after --"),
        (["sql"], {}, "the following arguments are required: statement"),
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(
    cli: Cli, args: list[str], env: dict[str, str], message: str
) -> None:
    result = cli(*args, extra_env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_missing_workgroup_is_a_usage_error(cli: Cli) -> None:
    result = cli("credentials", drop=["RSAUTH_WORKGROUP"])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rsauth credentials: error: --method iam needs --workgroup (or RSAUTH_WORKGROUP) "
        "or --custom-domain"
    )


def test_a_failure_is_one_line_and_debug_adds_the_traceback(
    cli: Cli, sandbox: Sandbox
) -> None:
    sandbox.deny("IAM:sandbox-admin")
    result = cli("credentials")
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("rsauth credentials: error: IAM identity arn:aws:iam::")
    assert "redshift-serverless:GetCredentials" in line
    assert "use --profile or --role-arn for another identity" in line
    assert "role_arn=" not in line

    debug = cli("credentials", "--debug")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "rsauth._errors.AccessDeniedError" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == line
    assert_no_secret(sandbox, debug.stderr)


# -- credentials -----------------------------------------------------------------------------


def test_credentials_table_masks_the_password(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("credentials", "--workgroup", sandbox.workgroup)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["user"] == "IAM:sandbox-admin"
    assert lines["password"].startswith("[secure]")
    assert lines["host"] == "localhost"
    assert lines["port"] == str(sandbox.port)
    assert lines["database"] == "dev"
    assert lines["method"] == "iam"
    assert "UTC (in 14 min" in lines["expires"] or "UTC (in 15 min" in lines["expires"]
    assert issued(sandbox), "a password was issued, and it is not in the output"
    assert_no_secret(sandbox, result.stdout, result.stderr)


def test_credentials_env_is_what_a_shell_eval_accepts(cli: Cli, sandbox: Sandbox) -> None:
    command = f"{sys.executable} -m rsauth credentials --format env"
    script = (
        f'eval "$({command})" || exit 9\n'
        'echo "$PGUSER"; echo "$PGHOST:$PGPORT/$PGDATABASE"; echo "$PGSSLMODE"\n'
        'echo "$PGSSLROOTCERT"; echo "$PGPASSWORD"'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    user, address, mode, root, password = result.stdout.splitlines()
    assert user == "IAM:sandbox-admin"
    assert address == f"localhost:{sandbox.port}/dev"
    assert mode == "verify-full"
    assert root == sandbox.env["SSL_CERT_FILE"]
    assert password in issued(sandbox)
    assert "expires" in result.stderr  # the expiry goes to the terminal, not to eval


@needs_psql
def test_credentials_env_logs_psql_in(cli: Cli, sandbox: Sandbox) -> None:
    command = f"{sys.executable} -m rsauth credentials --format env"
    script = f'eval "$({command})" && psql -X -At -c "select current_user"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "IAM:sandbox-admin"


def test_credentials_uri_is_percent_encoded(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("credentials", "--format", "uri")
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip()
    parts = urlsplit(uri)
    assert parts.scheme == "postgresql"
    assert parts.username == "IAM%3Asandbox-admin"
    assert unquote(parts.password or "") in issued(sandbox)
    assert (parts.hostname, parts.port, parts.path) == ("localhost", sandbox.port, "/dev")
    assert "sslmode=verify-full" in parts.query
    if PSQL is not None:
        logged_in = subprocess.run([PSQL, "-X", "-At", "-c", "select current_user", uri],
                                   capture_output=True, text=True, timeout=60, check=False)
        assert logged_in.stdout.strip() == "IAM:sandbox-admin", logged_in.stderr


def test_credentials_pgpass_escapes_the_user(
    cli: Cli, sandbox: Sandbox, tmp_path: Path
) -> None:
    result = cli("credentials", "--format", "pgpass")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    # The pgpass line has no room for TLS settings: stderr says what psql needs besides.
    ca = sandbox.env["SSL_CERT_FILE"]
    assert f"PGSSLMODE=verify-full PGSSLROOTCERT={ca}" in result.stderr
    assert line.startswith(f"localhost:{sandbox.port}:dev:IAM\\:sandbox-admin:")
    if PSQL is not None:
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(line + "\n")
        pgpass.chmod(stat.S_IRUSR | stat.S_IWUSR)
        env = {
            **os.environ,
            "PGPASSFILE": str(pgpass),
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": sandbox.env["SSL_CERT_FILE"],
        }
        logged_in = subprocess.run(
            [PSQL, "-X", "-w", "-At", "-h", "localhost", "-p", str(sandbox.port),
             "-U", "IAM:sandbox-admin", "-d", "dev", "-c", "select current_user"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )
        assert logged_in.stdout.strip() == "IAM:sandbox-admin", logged_in.stderr


def test_credentials_json(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("credentials", "--format", "json", "--method", "secret")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("rsauth: secret login for admin, expires does not expire")
    data = json.loads(result.stdout)
    assert data["method"] == "secret"
    assert data["user"] == "admin"
    assert data["password"] in issued(sandbox)
    assert data["expires_at"] is None
    assert data["sslmode"] == "verify-full"


def test_credentials_duration_and_database_reach_the_login(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("credentials", "--format", "json", "--duration", "3600",
                 extra_env={"RSAUTH_DATABASE": "dev"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert 3500 < data["expires_in"] <= 3600
    assert data["database"] == "dev"


# -- sql -------------------------------------------------------------------------------------

QUERY = "select current_user as who, 1.50::numeric(5,2) as n, null as nothing, 'a,b' as s"


def test_sql_table(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("sql", QUERY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split(" | ") == ["who              ", "   n", "nothing", "s"]
    assert lines[2].split(" | ") == ["IAM:sandbox-admin", "1.50", "NULL   ", "a,b"]
    assert lines[-1] == "(1 row)"


def test_sql_csv(cli: Cli) -> None:
    result = cli("sql", QUERY, "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["who", "n", "nothing", "s"],
        ["IAM:sandbox-admin", "1.50", "", "a,b"],
    ]


def test_sql_json_from_stdin(cli: Cli) -> None:
    result = cli("sql", "-", "--format", "json", stdin=QUERY)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"who": "IAM:sandbox-admin", "n": "1.50", "nothing": None, "s": "a,b"}
    ]


def test_sql_statement_without_rows_commits(cli: Cli, sandbox: Sandbox) -> None:
    created = cli("sql", "create table if not exists cli_made (a int)")
    assert created.returncode == 0, created.stderr
    assert created.stdout == ""
    assert "returned no rows" in created.stderr
    inserted = cli("sql", "insert into cli_made values (1), (2)")
    assert inserted.returncode == 0, inserted.stderr
    counted = cli("sql", "select count(*) from cli_made", "--format", "csv")
    assert counted.stdout.splitlines()[1] != "0"
    cli("sql", "drop table cli_made")


def test_sql_error_is_one_line_with_the_sqlstate(cli: Cli) -> None:
    result = cli("sql", "selec 1")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'rsauth sql: error: the database refused the statement: syntax error at or near '
        '"selec" (SQLSTATE 42601)'
    )


# -- psql ------------------------------------------------------------------------------------

FAKE_PSQL = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD.args"
printf '%s\\n' "$PGUSER" "$PGPASSWORD" "$PGHOST" "$PGPORT" "$PGDATABASE" "$PGSSLMODE" \
    "$PGSSLROOTCERT" > "$RECORD.env"
exit 7
"""


def test_psql_gets_the_login_in_its_environment_never_on_argv(
    cli: Cli, sandbox: Sandbox, tmp_path: Path
) -> None:
    fake = tmp_path / "psql"
    fake.write_text(FAKE_PSQL)
    fake.chmod(0o755)
    record = tmp_path / "record"
    result = cli("psql", "--psql", str(fake), "--", "-c", "select 1", "--no-psqlrc",
                 extra_env={"RECORD": str(record)})
    assert result.returncode == 7, "psql's exit code is the command's"
    args = Path(f"{record}.args").read_text().splitlines()
    assert args == ["-c", "select 1", "--no-psqlrc"]
    user, password, host, port, database, mode, root = Path(f"{record}.env").read_text(
    ).splitlines()
    assert password in issued(sandbox)
    assert (user, host, port, database) == ("IAM:sandbox-admin", "localhost",
                                            str(sandbox.port), "dev")
    assert (mode, root) == ("verify-full", sandbox.env["SSL_CERT_FILE"])
    assert_no_secret(sandbox, result.stdout, result.stderr, "\n".join(args))


@needs_psql
def test_psql_runs_the_real_client(cli: Cli) -> None:
    result = cli("psql", "--", "-X", "-At", "-c", "select current_user")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "IAM:sandbox-admin"


def test_a_psql_path_that_does_not_exist_is_named_as_such(cli: Cli) -> None:
    result = cli("psql", "--psql", "/no/such/psql")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "'/no/such/psql' does not exist or is not executable" in line
    assert "not found on PATH" not in line


def test_errors_name_the_flags_not_python_keywords(cli: Cli) -> None:
    result = cli("credentials", drop=["AWS_REGION", "AWS_DEFAULT_REGION"])
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "--region" in line
    assert "region=" not in line
    assert "Broker(" not in line
    result = cli("credentials", "--region", "eu west 1")
    [line] = result.stderr.splitlines()
    assert "--region 'eu west 1'" in line
    assert "an AWS region such as 'eu-west-1'" in line
    assert "Broker(" not in line


def test_copy_names_the_iam_role_flag(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("copy", "sales", "s3://acme-etl/sales.csv")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "IAM_ROLE default needs a default IAM role" in line
    assert "--iam-role" in line
    assert "iam_role=" not in line


def test_psql_missing_says_what_to_do(cli: Cli, tmp_path: Path) -> None:
    result = cli("psql", extra_env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "'psql' was not found on PATH; install the PostgreSQL client" in line


# -- whoami ----------------------------------------------------------------------------------


def test_whoami(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("whoami")
    assert result.returncode == 0, result.stderr
    facts = dict(line.split("  ", 1) for line in result.stdout.splitlines())
    facts = {key.strip(): value.strip() for key, value in facts.items()}
    assert facts["AWS identity"] == f"arn:aws:iam::{sandbox.account_id}:user/sandbox-admin"
    assert facts["database user"] == "IAM:sandbox-admin"
    assert facts["method"] == "iam"
    assert facts["superuser"] == "yes"
    assert_no_secret(sandbox, result.stdout, result.stderr)


def test_whoami_as_a_role_is_not_a_superuser(cli: Cli, sandbox: Sandbox) -> None:
    name = "cli-whoami"
    role = make_role(name)
    result = cli("whoami", "--role-arn", role)
    assert result.returncode == 0, result.stderr
    assert f"assumed-role/{name}/" in result.stdout
    assert f"IAMR:{name}" in result.stdout
    assert "superuser      no" in result.stdout
    assert_no_secret(sandbox, result.stdout, result.stderr)


def test_whoami_with_the_admin_secret(cli: Cli, sandbox: Sandbox) -> None:
    result = cli("whoami", "--method", "secret")
    assert result.returncode == 0, result.stderr
    assert "database user  admin" in result.stdout
    assert "method         secret" in result.stdout
    assert "login expires  does not expire" in result.stdout
    assert_no_secret(sandbox, result.stdout, result.stderr)


# -- sandbox ---------------------------------------------------------------------------------


def test_sandbox_subcommand_is_python_m_rsauth_sandbox(cli: Cli) -> None:
    result = cli("sandbox", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: rsauth sandbox")
    assert "--seed" in result.stdout


@pytest.mark.parametrize("option", ["ignore_header=²", "ignore_header=٣", "max_error=¹"])
def test_copy_option_with_a_non_ascii_digit_is_a_usage_error(cli: Cli, option: str) -> None:
    result = cli("copy", "t", "s3://bucket/k", "-o", option, "--print-sql")
    assert result.returncode == 2, result.stderr
    assert option.split("=")[0] in result.stderr
    assert "Traceback" not in result.stderr
    assert "unexpected error" not in result.stderr
