"""rsauth.etl through the sandbox: COPY and UNLOAD with the namespace's IAM roles."""

# ruff: noqa: S608 - the SQL is built from table names the tests generate, nothing else
from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redshift_connector
from tests._iam import allow, make_role

import rsauth
from rsauth import etl
from rsauth.sandbox import Sandbox

ACCOUNT = "123456789012"
BUCKET = "rsauth-etl-tests"
LOADER = f"arn:aws:iam::{ACCOUNT}:role/etl-tests-loader"
STRANGER = f"arn:aws:iam::{ACCOUNT}:role/etl-tests-stranger"

ROWS = [
    (1, "Ann", "Zürich", "12.50"),
    (2, "O'Brien, Pat", 'the "best" seat', "7.00"),
    (3, "semi;colon", "back\\slash", "0.10"),
    (4, "日本", "", "3.25"),
]


def _trust() -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "redshift-serverless.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }]})


def set_roles(sb: Sandbox, roles: list[str], default: str | None) -> None:
    """Associate ``roles`` with the namespace, ``default`` its default role (None: no default).

    UpdateNamespace takes iamRoles and defaultIamRoleArn together; the sandbox reads an
    empty default as "none".
    """
    boto3.client("redshift-serverless").update_namespace(
        namespaceName=sb.namespace, iamRoles=roles, defaultIamRoleArn=default or ""
    )


@pytest.fixture
def world(sandbox: Sandbox) -> Iterator[None]:
    """The loader role (associated, the default), a bucket; the namespace restored after."""
    # Both may read, write and list the test bucket, as COPY and UNLOAD need.
    reach = allow(
        ("s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject"),
        [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
    )
    for arn in (LOADER, STRANGER):
        make_role(arn.rsplit("/", 1)[1], reach, trust_policy=_trust())
    s3 = boto3.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    before = boto3.client("redshift-serverless").get_namespace(
        namespaceName=sandbox.namespace
    )["namespace"]
    set_roles(sandbox, [LOADER], LOADER)
    try:
        yield
    finally:
        # GetNamespace writes each role as "IamRole(applyStatus=in-sync, iamRoleArn=<arn>)".
        arns = [re.search(r"iamRoleArn=([^,)\s]+)", entry).group(1)  # type: ignore[union-attr]
                for entry in before.get("iamRoles", [])]
        set_roles(sandbox, arns, before.get("defaultIamRoleArn") or None)


@pytest.fixture
def broker(world: None) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


@pytest.fixture
def conn(sandbox: Sandbox, broker: rsauth.Broker) -> Iterator[Any]:
    with broker.connect(workgroup=sandbox.workgroup, timeout=30) as connection:
        yield connection


@pytest.fixture
def prefix() -> str:
    return f"etl-{uuid.uuid4().hex[:10]}/"


def run(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    cursor.execute(sql)
    rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    cursor.close()
    return rows


def make_table(conn: Any) -> str:
    name = f"etl_{uuid.uuid4().hex[:8]}"
    run(conn, f'create table "{name} Sales" (id int, name varchar(40), seat varchar(40), '
              "price numeric(8,2))")
    conn.commit()
    return f'"{name} Sales"'


def put_csv(prefix: str, rows: list[tuple[Any, ...]], header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["id", "name", "seat", "price"])
    writer.writerows(rows)
    key = f"{prefix}in/sales.csv"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue().encode())
    return f"s3://{BUCKET}/{key}"


def stored(conn: Any, table: str) -> list[tuple[Any, ...]]:
    return [(row[0], row[1], row[2], str(row[3]))
            for row in run(conn, f"select id, name, seat, price from {table} order by id")]


# --------------------------------------------------------------------------- the happy paths


def test_copy_with_the_default_role_loads_every_row(
    sandbox: Sandbox, broker: rsauth.Broker, conn: Any, prefix: str
) -> None:
    table = make_table(conn)
    source = put_csv(prefix, ROWS)
    assert etl.copy(conn, table, source, ignore_header=1) == len(ROWS)
    conn.commit()
    assert stored(conn, table) == ROWS
    # The namespace lookup is cached: a second load asks AWS nothing more.
    calls = broker.stats().get("redshift-serverless.GetNamespace", 0)
    assert calls == 1
    assert etl.copy(conn, table, source, ignore_header=1, columns=["id", "name", "seat", "price"])
    assert broker.stats().get("redshift-serverless.GetNamespace", 0) == calls
    conn.rollback()


def test_unload_writes_objects_that_read_back_equal(conn: Any, prefix: str) -> None:
    table = make_table(conn)
    etl.copy(conn, table, put_csv(prefix, ROWS), ignore_header=1)
    conn.commit()
    query = f"select id, name, seat, price from {table} where name <> 'nobody''s' order by id"
    result = etl.unload(conn, query, f"s3://{BUCKET}/{prefix}out/sales_", header=True,
                        parallel=False)
    assert result.rows == len(ROWS)
    assert result.manifest is None
    assert result.files == (f"s3://{BUCKET}/{prefix}out/sales_000",)
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"{prefix}out/sales_000")["Body"]
    lines = list(csv.reader(io.StringIO(body.read().decode())))
    assert lines[0] == ["id", "name", "seat", "price"]
    assert [(int(i), n, s, p) for i, n, s, p in lines[1:]] == ROWS

    # With a manifest, the files come from it; COPY reads them back into an equal table.
    result = etl.unload(conn, query, f"s3://{BUCKET}/{prefix}pq/sales_", format="parquet",
                        manifest=True)
    assert result.manifest == f"s3://{BUCKET}/{prefix}pq/sales_manifest"
    assert result.files == (f"s3://{BUCKET}/{prefix}pq/sales_0000_part_00.parquet",)
    copy = make_table(conn)
    assert etl.copy(conn, copy, result.manifest, format="parquet", manifest=True) == len(ROWS)
    conn.commit()
    assert stored(conn, copy) == ROWS


def test_named_role_and_a_plain_connection_with_workgroup(
    sandbox: Sandbox, broker: rsauth.Broker, prefix: str
) -> None:
    credentials = broker.credentials(workgroup=sandbox.workgroup)
    plain = redshift_connector.connect(
        host=credentials.host, port=credentials.port, database=credentials.database,
        user=credentials.user, password=credentials.password, ssl=True,
        sslmode="verify-full", timeout=30,
    )
    with plain:
        table = make_table(plain)
        source = put_csv(prefix, ROWS[:2], header=False)
        with pytest.raises(rsauth.ConfigurationError, match="pass workgroup="):
            etl.copy(plain, table, source, iam_role=LOADER)
        loaded = etl.copy(plain, table, source, iam_role=LOADER, workgroup=sandbox.workgroup,
                          broker=broker)
        assert loaded == 2


# --------------------------------------------------------------------------- the role check


def assert_untouched(conn: Any, table: str, notices_before: int) -> None:
    """Nothing reached the database: no notice, and the transaction is not aborted."""
    assert len(conn.notices) == notices_before
    assert run(conn, f"select count(*) from {table}") == [(0,)]


def test_no_default_role_fails_before_anything_runs(
    sandbox: Sandbox, conn: Any, prefix: str
) -> None:
    table = make_table(conn)
    source = put_csv(prefix, ROWS)
    set_roles(sandbox, [LOADER], None)
    before = len(conn.notices)
    with pytest.raises(rsauth.IamRoleError) as caught:
        etl.copy(conn, table, source, ignore_header=1)
    text = str(caught.value)
    assert "IAM_ROLE default needs a default IAM role" in text
    assert f"namespace {sandbox.namespace!r}" in text
    assert f"roles associated: {LOADER}" in text
    assert_untouched(conn, table, before)
    with pytest.raises(rsauth.IamRoleError, match="IAM_ROLE default needs"):
        etl.unload(conn, "select 1", f"s3://{BUCKET}/{prefix}never_")
    assert_untouched(conn, table, before)

    # Without the check, the sandbox refuses it as Redshift would, mapped to the same class.
    with pytest.raises(rsauth.IamRoleError) as caught:
        etl.copy(conn, table, source, ignore_header=1, check_role=False)
    assert "no default IAM role" in str(caught.value)
    assert "SQLSTATE XX000" in str(caught.value)
    conn.rollback()


def test_unassociated_role_fails_before_anything_runs(
    sandbox: Sandbox, conn: Any, prefix: str
) -> None:
    table = make_table(conn)
    source = put_csv(prefix, ROWS)
    before = len(conn.notices)
    with pytest.raises(rsauth.IamRoleError) as caught:
        etl.copy(conn, table, source, iam_role=[STRANGER, LOADER], ignore_header=1)
    text = str(caught.value)
    assert f"IAM role {STRANGER} (the first role of the chain) is not associated" in text
    assert f"namespace {sandbox.namespace!r}" in text
    assert f"roles associated: {LOADER}; default: {LOADER}" in text
    assert_untouched(conn, table, before)

    with pytest.raises(rsauth.IamRoleError) as caught:
        etl.copy(conn, table, source, iam_role=STRANGER, ignore_header=1, check_role=False)
    assert f"Not authorized to get credentials of role {STRANGER}" in str(caught.value)
    conn.rollback()


def test_a_role_associated_after_a_cached_lookup_is_seen(
    sandbox: Sandbox, conn: Any, prefix: str
) -> None:
    table = make_table(conn)
    source = put_csv(prefix, ROWS)
    etl.copy(conn, table, source, ignore_header=1)  # caches the namespace's roles
    set_roles(sandbox, [LOADER, STRANGER], LOADER)
    assert etl.copy(conn, table, source, iam_role=STRANGER, ignore_header=1) == len(ROWS)
    conn.rollback()


def test_a_bad_row_is_a_load_error_with_redshifts_detail(conn: Any, prefix: str) -> None:
    table = make_table(conn)
    key = f"{prefix}bad.csv"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"1,a,b,1.0\nx2,c,d,2.0\n")
    with pytest.raises(rsauth.LoadError) as caught:
        etl.copy(conn, table, f"s3://{BUCKET}/{key}")
    assert not isinstance(caught.value, rsauth.IamRoleError)
    text = str(caught.value)
    assert "failed. Check 'sys_load_error_detail' system table for details." in text
    assert "line_number: 2" in text
    assert "roll back" in text
    conn.rollback()


# --------------------------------------------------------------------------- the command line


def test_rsauth_copy_and_unload_commands(
    sandbox: Sandbox, conn: Any, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rsauth._cli import main

    table = make_table(conn)
    source = put_csv(prefix, ROWS)
    login = ["--workgroup", sandbox.workgroup]
    assert main(["copy", table, source, "-o", "ignore_header=1", *login]) == 0
    assert capsys.readouterr().out == f"{len(ROWS)} row(s) loaded into {table} from {source}\n"
    destination = f"s3://{BUCKET}/{prefix}cli_"
    query = f"select * from {table} order by id"
    assert main(["unload", query, destination, "-o", "parallel=off", *login]) == 0
    assert capsys.readouterr().out == (
        f"{len(ROWS)} row(s) unloaded to {destination}\n{destination}000\n"
    )
    assert main(["copy", table, source, "-o", "ignoreheader=1", *login]) == 2
    assert "did you mean ignore_header=?" in capsys.readouterr().err
    assert main(["copy", table, source, "--iam-role", STRANGER, *login]) == 1
    assert f"IAM role {STRANGER} is not associated" in capsys.readouterr().err
