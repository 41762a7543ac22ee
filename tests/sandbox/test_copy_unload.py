"""COPY and UNLOAD against the sandbox, through redshift_connector directly (not rsauth).

Statements marked "Developer Guide" are copied from the AWS Redshift Database
Developer Guide's COPY and UNLOAD examples (r_COPY_command_examples,
r_UNLOAD_command_examples) with only the bucket, table and role ARN adapted:
they check the grammar the way Redshift's documentation writes it.
"""

# ruff: noqa: S608 - the SQL is built from table names the tests generate, nothing else
from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
import redshift_connector
from redshift_connector.error import ProgrammingError
from tests._iam import allow, make_role, make_user

from rsauth.sandbox import Sandbox, SandboxError

pytest.importorskip("pyarrow")

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

BUCKET = "rsauth-copy-tests"
ACCOUNT = "123456789012"
LOADER = f"arn:aws:iam::{ACCOUNT}:role/copy-loader"  # associated, the default
READER = f"arn:aws:iam::{ACCOUNT}:role/copy-reader"  # associated, trusts the loader
STRANGER = f"arn:aws:iam::{ACCOUNT}:role/copy-stranger"  # not associated, trusts nobody
S3_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject")
# Serverless's text (https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html
# is where it points; STL views hold no serverless queries).
LOAD_FAILED = "Load into table '{}' failed. Check 'sys_load_error_detail' system table for details."

CATEGORY = (
    "create table {t} (catid smallint, catgroup varchar(10), catname varchar(10), "
    "catdesc varchar(50))"
)
VENUE = (
    "create table {t} (venueid smallint not null, venuename varchar(100) not null, "
    "venuecity varchar(30), venuestate char(2), venueseats integer not null default '1000')"
)


# --------------------------------------------------------------------------- fixtures


def _trust(*principals: str) -> str:
    statements = [
        {"Effect": "Allow", "Principal": {"AWS": p}, "Action": "sts:AssumeRole"}
        for p in principals
    ]
    statements.append(
        {
            "Effect": "Allow",
            "Principal": {"Service": "redshift-serverless.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


@pytest.fixture(scope="module")
def _world(sandbox_session: Sandbox) -> Iterator[None]:
    """Roles, a bucket and the namespace's role association, restored afterwards."""
    env = sandbox_session.env
    # A module fixture: the per-test environment is not applied yet, so name everything.
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    iam = session.client("iam", endpoint_url=env["AWS_ENDPOINT_URL_IAM"])
    s3 = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
    plane = session.client(
        "redshift-serverless", endpoint_url=env["AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS"]
    )
    # Each role may read, write and list the test bucket, as COPY and UNLOAD need.
    reach = allow(S3_ACTIONS, [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"])
    for arn, trust in ((LOADER, _trust()), (READER, _trust(LOADER)), (STRANGER, _trust())):
        make_role(arn.rsplit("/", 1)[1], reach, trust_policy=trust, iam=iam)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    before = plane.get_namespace(namespaceName=sandbox_session.namespace)["namespace"]
    plane.update_namespace(
        namespaceName=sandbox_session.namespace, iamRoles=[LOADER, READER],
        defaultIamRoleArn=LOADER,
    )
    yield
    plane.update_namespace(
        namespaceName=sandbox_session.namespace, iamRoles=role_arns(before),
        defaultIamRoleArn=before.get("defaultIamRoleArn", ""),
    )


def role_arns(namespace: Mapping[str, Any]) -> list[str]:
    """The ARNs of GetNamespace's iamRoles, which AWS writes as
    "IamRole(applyStatus=in-sync, iamRoleArn=<arn>)"."""
    return [re.search(r"iamRoleArn=([^,)\s]+)", entry).group(1)  # type: ignore[union-attr]
            for entry in namespace.get("iamRoles", [])]


def clear_default_role(plane: Any, namespace: str, roles: list[str]) -> None:
    """Leave ``roles`` associated and no default role.

    UpdateNamespace takes iamRoles and defaultIamRoleArn together; the sandbox reads an
    empty default as "none".
    """
    plane.update_namespace(namespaceName=namespace, iamRoles=roles, defaultIamRoleArn="")


@pytest.fixture
def db(sandbox: Sandbox, _world: None) -> Iterator[Any]:
    """The admin, logged in with the managed secret; autocommit off, as the driver starts."""
    namespace = boto3.client("redshift-serverless").get_namespace(
        namespaceName=sandbox.namespace
    )["namespace"]
    secret = boto3.client("secretsmanager").get_secret_value(
        SecretId=namespace["adminPasswordSecretArn"]
    )
    document = json.loads(secret["SecretString"])
    connection = redshift_connector.connect(
        host=sandbox.host, port=sandbox.port, database=sandbox.database,
        user=document["username"], password=document["password"],
        ssl=True, sslmode="verify-full", timeout=30,
    )
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def s3(sandbox: Sandbox) -> Any:
    return boto3.client("s3")


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/"


def table(db: Any, ddl: str) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    run(db, ddl.format(t=name))
    db.commit()
    return name


def run(db: Any, sql: str, params: Any = None) -> Any:
    cursor = db.cursor()
    cursor.execute(sql, params)
    return cursor


def rows(db: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in run(db, sql).fetchall()]


def put(s3: Any, key: str, body: bytes | str) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode() if isinstance(body, str) else body)


def get(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def keys(s3: Any, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def refusal(db: Any, sql: str, params: Any = None) -> dict[str, str]:
    with pytest.raises(ProgrammingError) as caught:
        run(db, sql, params)
    db.rollback()
    detail = caught.value.args[0]
    assert isinstance(detail, dict)
    return detail


def doc(statement: str, prefix: str, **tables: str) -> str:
    """A Developer Guide statement with the sandbox's bucket, a test prefix, tables and role."""
    statement = statement.replace("s3://mybucket/", f"s3://{BUCKET}/{prefix}")
    statement = statement.replace("arn:aws:iam::0123456789012:role/MyRedshiftRole", LOADER)
    for name, actual in tables.items():
        statement = statement.replace(f" {name} ", f" {actual} ")
        statement = statement.replace(f" {name}(", f" {actual}(")
        statement = statement.replace(f" {name}\n", f" {actual}\n")
    return statement


CATEGORY_ROWS = [
    (12, "Shows", "Musicals", "Musical theatre"),
    (13, "Shows", "Plays", 'All "non-musical" theatre'),
    (14, "Shows", "Opera", 'All opera, light, and "rock" opera'),
    (15, "Concerts", "Classical", "All symphony, concerto, and choir concerts"),
]


# --------------------------------------------------------------------------- COPY formats


def test_copy_csv_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}data/category_csv.txt", (
        "12,Shows,Musicals,Musical theatre\n"
        '13,Shows,Plays,"All ""non-musical"" theatre"\n'
        '14,Shows,Opera,"All opera, light, and ""rock"" opera"\n'
        '15,Concerts,Classical,"All symphony, concerto, and choir concerts"\n'
    ))
    category = table(db, CATEGORY)
    run(db, doc("""copy category
from 's3://mybucket/data/category_csv.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv;""", prefix, category=category))
    assert rows(db, f"select * from {category} order by 1") == CATEGORY_ROWS
    notice = db.notices[-1]
    assert notice[b"M"] == (
        f"Load into table '{category}' completed, 4 record(s) loaded successfully.".encode()
    )


def test_copy_csv_quote_as_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}data/category_csv.txt", (
        "12,Shows,Musicals,Musical theatre\n"
        '13,Shows,Plays,%All "non-musical" theatre%\n'
        '14,Shows,Opera,%All opera, light, and "rock" opera%\n'
        "15,Concerts,Classical,%All symphony, concerto, and choir concerts%\n"
    ))
    category = table(db, CATEGORY)
    run(db, doc("""copy category
from 's3://mybucket/data/category_csv.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv quote as '%';""", prefix, category=category))
    assert rows(db, f"select * from {category} order by 1") == CATEGORY_ROWS


def test_copy_csv_options_header_delimiter_nulls(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}people.csv", (
        "id;name;born;score\n"
        "1;Ann;2001-02-03;1.5\n"
        "2;;;\n"
        '3;"";2003-04-05;NUL\n'
        "4;NUL;2004-05-06;2\n"
    ))
    people = table(db, "create table {t} (id int, name varchar(10), born date, score numeric(4,1))")
    run(db, f"""COPY {people} FROM 's3://{BUCKET}/{prefix}people.csv' IAM_ROLE default
                FORMAT AS CSV DELIMITER ';' IGNOREHEADER 1 NULL AS 'NUL'""")
    got = rows(db, f"select id, name, born::text, score::text from {people} order by id")
    # Empty: NULL for non-character columns, '' for character ones (no EMPTYASNULL).
    assert got == [
        (1, "Ann", "2001-02-03", "1.5"),
        (2, "", None, None),
        (3, "", "2003-04-05", None),
        (4, None, "2004-05-06", "2.0"),
    ]
    run(db, f"truncate {people}")
    run(db, f"""copy {people} from 's3://{BUCKET}/{prefix}people.csv' iam_role default
                csv delimiter ';' ignoreheader 1 null 'NUL' emptyasnull""")
    assert rows(db, f"select name from {people} where id = 2") == [(None,)]


def test_copy_pipe_delimited_gzip_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}data/timerows.gz", gzip.compress(b"1|2008-01-01|Tue\n2|2008-01-02|Wed\n"))
    time_table = table(db, "create table {t} (dateid int, caldate date, day char(3))")
    run(db, doc("""copy time
from 's3://mybucket/data/timerows.gz'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
gzip
delimiter '|';""", prefix, time=time_table))
    assert rows(db, f"select dateid, caldate::text, day from {time_table} order by 1") == [
        (1, "2008-01-01", "Tue"), (2, "2008-01-02", "Wed"),
    ]


def test_copy_prefix_loads_every_object_and_defaults(db: Any, s3: Any, prefix: str) -> None:
    # Developer Guide: "The COPY command loads all of the files in the /data/listing/ folder",
    # and venue_noseats.txt (trailing delimiter, the default for the omitted column).
    put(s3, f"{prefix}data/listing/part-1", "1|Toyota Park|Bridgeview|IL|\n")
    put(s3, f"{prefix}data/listing/part-2", "2|Columbus Crew Stadium|Columbus|OH|\n")
    venue = table(db, VENUE)
    run(db, doc("""copy venue_new(venueid, venuename, venuecity, venuestate)
from 's3://mybucket/data/listing/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
delimiter '|';""", prefix, venue_new=venue))
    assert rows(db, f"select * from {venue} order by 1") == [
        (1, "Toyota Park", "Bridgeview", "IL", 1000),
        (2, "Columbus Crew Stadium", "Columbus", "OH", 1000),
    ]


def test_copy_escape_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}data/redshiftinfo.txt", (
        "1|public\\|event\\|dwuser\n"
        "2|public\\|sales\\|dwuser\n"
    ))
    info = table(db, "create table {t}(infoid int,tableinfo varchar(50))")
    run(db, doc("""copy redshiftinfo from 's3://mybucket/data/redshiftinfo.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
delimiter '|' escape;""", prefix, redshiftinfo=info))
    assert rows(db, f"select * from {info} order by 1") == [
        (1, "public|event|dwuser"), (2, "public|sales|dwuser"),
    ]


def test_copy_json_auto_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}category_object_auto.json", """{
    "catdesc": "Major League Baseball",
    "catid": 1,
    "catgroup": "Sports",
    "catname": "MLB"
}
{
    "catgroup": "Sports",
    "catid": 2,
    "catname": "NHL",
    "catdesc": "National Hockey League"
}{
    "catid": 3,
    "catname": "NFL",
    "catgroup": "Sports",
    "catdesc": "National Football League"
}
{
    "bogus": "Bogus Sports LLC",
    "catid": 4,
    "catgroup": "Sports",
    "catname": "NBA",
    "catdesc": "National Basketball Association"
}
{
    "catid": 5,
    "catgroup": "Shows",
    "catname": "Musicals",
    "catdesc": "All symphony, concerto, and choir concerts"
}
""")
    category = table(db, CATEGORY)
    run(db, doc("""copy category
from 's3://mybucket/category_object_auto.json'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
json 'auto';""", prefix, category=category))
    got = rows(db, f"select catid, catname from {category} order by 1")
    assert got == [(1, "MLB"), (2, "NHL"), (3, "NFL"), (4, "NBA"), (5, "Musicals")]


def test_copy_json_paths_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}category_array_data.json", (
        '[1,"Sports","MLB","Major League Baseball"]\n'
        '[2,"Sports","NHL","National Hockey League"]\n'
    ))
    put(s3, f"{prefix}category_array_jsonpath.json",
        '{"jsonpaths": ["$[0]", "$[1]", "$[2]", "$[3]"]}')
    category = table(db, CATEGORY)
    run(db, doc("""copy category
from 's3://mybucket/category_array_data.json'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
json 's3://mybucket/category_array_jsonpath.json';""", prefix, category=category))
    assert rows(db, f"select catid, catdesc from {category} order by 1") == [
        (1, "Major League Baseball"), (2, "National Hockey League"),
    ]


def test_copy_parquet_keeps_types(db: Any, s3: Any, prefix: str) -> None:
    import datetime
    import decimal

    data = pa.table({
        "listid": pa.array([1, 2], pa.int32()),
        "price": pa.array([decimal.Decimal("10.50"), None], pa.decimal128(8, 2)),
        "listtime": pa.array([datetime.datetime(2008, 1, 24, 6, 43, 29), None]),
        "active": pa.array([True, False]),
        "note": pa.array(["a|b", None]),
    })
    sink = io.BytesIO()
    pq.write_table(data, sink)
    put(s3, f"{prefix}data/listings/parquet/part-0.parquet", sink.getvalue())
    listing = table(
        db, "create table {t} (listid int, price numeric(8,2), listtime timestamp, "
        "active boolean, note varchar(10))",
    )
    run(db, doc("""copy listing
from 's3://mybucket/data/listings/parquet/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
format as parquet;""", prefix, listing=listing))
    got = rows(
        db, f"select listid, price::text, listtime::text, active, note from {listing} order by 1"
    )
    assert got == [(1, "10.50", "2008-01-24 06:43:29", True, "a|b"), (2, None, None, False, None)]


def test_copy_manifest_from_the_developer_guide(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}custdata.1", "12|Shows|Musicals|Musical theatre\n")
    put(s3, f"{prefix}custdata.2", "13|Shows|Plays|Plays\n")
    put(s3, f"{prefix}custdata.backup", "99|Not|Loaded|Ever\n")
    put(s3, f"{prefix}cust.manifest", json.dumps({"entries": [
        {"url": f"s3://{BUCKET}/{prefix}custdata.1", "mandatory": True},
        {"url": f"s3://{BUCKET}/{prefix}custdata.2", "mandatory": True},
        {"url": f"s3://{BUCKET}/{prefix}custdata.3", "mandatory": False},
    ]}))
    customer = table(db, CATEGORY)
    run(db, doc("""copy customer
from 's3://mybucket/cust.manifest'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
manifest;""", prefix, customer=customer))
    assert rows(db, f"select catid from {customer} order by 1") == [(12,), (13,)]


def test_rollback_undoes_a_copy(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}one.txt", "1|x\n2|y\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    run(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role default")
    assert rows(db, f"select count(*) from {loaded}") == [(2,)]
    db.rollback()
    assert rows(db, f"select count(*) from {loaded}") == [(0,)]
    run(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role default")
    db.commit()
    assert rows(db, f"select count(*) from {loaded}") == [(2,)]


# --------------------------------------------------------------------------- authorization


def test_named_role_and_role_chain_are_accepted(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}one.txt", "1|x\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    run(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role '{READER}'")
    run(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role '{LOADER},{READER}'")
    assert rows(db, f"select count(*) from {loaded}") == [(2,)]


def test_default_iam_role_function(db: Any, sandbox: Sandbox) -> None:
    assert rows(db, "select default_iam_role()") == [(LOADER,)]
    assert rows(db, "select 'default_iam_role()' as text") == [("default_iam_role()",)]


def test_unassociated_role_is_refused_with_redshifts_text(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}one.txt", "1|x\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    source = f"s3://{BUCKET}/{prefix}one.txt"
    detail = refusal(db, f"copy {loaded} from '{source}' iam_role '{STRANGER}'")
    assert detail["C"] == "XX000"
    assert detail["M"] == f"Not authorized to get credentials of role {STRANGER}"


def _role_document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


_ASSUME = "sts:AssumeRole"
_REDSHIFT = "redshift.amazonaws.com"
# Associated roles whose trust policies Redshift meets when it assumes them for COPY/UNLOAD
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html):
# name -> (trust policy, whether Redshift may assume the role).
TRUSTS: dict[str, tuple[str, bool]] = {
    "trust-service-string": (
        _role_document({"Effect": "Allow", "Principal": {"Service": _REDSHIFT}, "Action": _ASSUME}),
        True,
    ),
    "trust-service-list": (
        _role_document(
            {
                "Effect": "Allow",
                "Principal": {"Service": ["ec2.amazonaws.com", _REDSHIFT]},
                "Action": [_ASSUME, "sts:TagSession"],
            }
        ),
        True,
    ),
    "trust-sts-wildcard": (
        _role_document(
            {"Effect": "Allow", "Principal": {"Service": [_REDSHIFT]}, "Action": "sts:*"}
        ),
        True,
    ),
    "trust-account-only": (
        _role_document(
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": [_ASSUME, "sts:TagSession"],
            }
        ),
        False,
    ),
    "trust-other-service": (
        _role_document(
            {"Effect": "Allow", "Principal": {"Service": "glue.amazonaws.com"}, "Action": _ASSUME}
        ),
        False,
    ),
    "trust-wrong-action": (
        _role_document(
            {"Effect": "Allow", "Principal": {"Service": _REDSHIFT}, "Action": "sts:TagSession"}
        ),
        False,
    ),
    "trust-denied": (
        _role_document(
            {"Effect": "Allow", "Principal": {"Service": _REDSHIFT}, "Action": _ASSUME},
            {"Effect": "Deny", "Principal": {"Service": [_REDSHIFT]}, "Action": "sts:Assume*"},
        ),
        False,
    ),
}


@pytest.fixture
def trusted_roles(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """The TRUSTS roles, associated with the namespace for one test: name -> ARN."""
    iam = boto3.client("iam")
    plane = boto3.client("redshift-serverless")
    arns = {}
    for name, (document, _) in TRUSTS.items():
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=document)
        arns[name] = f"arn:aws:iam::{ACCOUNT}:role/{name}"
    plane.update_namespace(
        namespaceName=sandbox.namespace, iamRoles=[LOADER, READER, *arns.values()],
        defaultIamRoleArn=LOADER,
    )
    try:
        yield arns
    finally:
        plane.update_namespace(
            namespaceName=sandbox.namespace, iamRoles=[LOADER, READER], defaultIamRoleArn=LOADER
        )


def test_a_role_redshift_may_not_assume_is_refused(
    db: Any, s3: Any, prefix: str, trusted_roles: dict[str, str]
) -> None:
    put(s3, f"{prefix}one.txt", "1|x\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    source = f"s3://{BUCKET}/{prefix}one.txt"
    for name, arn in trusted_roles.items():
        trusted = TRUSTS[name][1]
        if trusted:
            run(db, f"copy {loaded} from '{source}' iam_role '{arn}'")
            db.commit()  # the refusals below roll back
            continue
        detail = refusal(db, f"copy {loaded} from '{source}' iam_role '{arn}'")
        assert (detail["C"], detail["M"]) == (
            "XX000", f"Not authorized to get credentials of role {arn}"
        ), name
        detail = refusal(
            db, f"unload ('select 1') to 's3://{BUCKET}/{prefix}{name}/' iam_role '{arn}'"
        )
        assert detail["M"] == f"Not authorized to get credentials of role {arn}", name
    db.commit()
    trusted_count = sum(1 for _, trusted in TRUSTS.values() if trusted)
    assert rows(db, f"select count(*) from {loaded}") == [(trusted_count,)]


def test_a_role_that_does_not_exist_is_refused(db: Any, sandbox: Sandbox, prefix: str) -> None:
    plane = boto3.client("redshift-serverless")
    ghost = f"arn:aws:iam::{ACCOUNT}:role/copy-ghost"
    loaded = table(db, "create table {t} (id int)")
    plane.update_namespace(
        namespaceName=sandbox.namespace, iamRoles=[LOADER, READER, ghost], defaultIamRoleArn=LOADER
    )
    try:
        detail = refusal(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}x' iam_role '{ghost}'")
    finally:
        plane.update_namespace(
            namespaceName=sandbox.namespace, iamRoles=[LOADER, READER], defaultIamRoleArn=LOADER
        )
    assert detail["M"] == f"Not authorized to get credentials of role {ghost}"


def test_broken_chain_is_refused(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}one.txt", "1|x\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    # STRANGER trusts nobody, so the loader cannot assume it.
    detail = refusal(
        db, f"copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role '{LOADER},{STRANGER}'"
    )
    assert detail["C"] == "XX000"
    assert detail["M"] == (
        f"User arn:aws:sts::{ACCOUNT}:assumed-role/copy-loader/RedshiftIamRoleSession "
        f"is not authorized to assume IAM Role {STRANGER}"
    )


def test_no_default_role_is_refused(db: Any, sandbox: Sandbox, s3: Any, prefix: str) -> None:
    plane = boto3.client("redshift-serverless")
    put(s3, f"{prefix}one.txt", "1|x\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    clear_default_role(plane, sandbox.namespace, [LOADER, READER])
    try:
        assert rows(db, "select default_iam_role()") == [(None,)]
        detail = refusal(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role default")
    finally:
        plane.update_namespace(
            namespaceName=sandbox.namespace, iamRoles=[LOADER, READER], defaultIamRoleArn=LOADER
        )
    assert detail["C"] == "XX000"
    assert detail["M"].startswith(
        f"IAM_ROLE default was given, but namespace {sandbox.namespace} has no default IAM role"
    )


def test_access_keys_in_the_statement(db: Any, sandbox: Sandbox, s3: Any, prefix: str) -> None:
    user = f"copy-keys-{uuid.uuid4().hex[:6]}"
    reach = allow(S3_ACTIONS, [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"])
    keys = make_user(user, reach)
    key = {"AccessKeyId": keys["aws_access_key_id"],
           "SecretAccessKey": keys["aws_secret_access_key"]}
    put(s3, f"{prefix}data/listings_pipe.txt", "1|x\n")
    listing = table(db, "create table {t} (id int, v varchar(5))")
    run(db, doc("""copy listing
from 's3://mybucket/data/listings_pipe.txt'
access_key_id '<access-key-id>'
secret_access_key '<secret-access-key';""", prefix, listing=listing).replace(
        "<access-key-id>", key["AccessKeyId"]).replace(
        "<secret-access-key", key["SecretAccessKey"]))
    assert rows(db, f"select * from {listing}") == [(1, "x")]
    detail = refusal(
        db, f"copy {listing} from 's3://{BUCKET}/{prefix}data/listings_pipe.txt' "
        "access_key_id 'AKIAUNKNOWNKEY000000' secret_access_key 'nope'",
    )
    assert detail["C"] == "XX000"
    assert detail["M"].startswith(
        "S3ServiceException:The AWS Access Key Id you provided does not exist in our records.,"
        "Status 403,Error InvalidAccessKeyId,"
    )


# --------------------------------------------------------------------------- load errors


def test_missing_object_is_refused(db: Any, prefix: str) -> None:
    loaded = table(db, "create table {t} (id int)")
    detail = refusal(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}nothing/' iam_role default")
    assert detail["C"] == "XX000"
    assert detail["M"] == f"The specified S3 prefix '{prefix}nothing/' does not exist"
    detail = refusal(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}m' iam_role default manifest")
    assert detail["M"].startswith(
        "S3ServiceException:The specified key does not exist.,Status 404,Error NoSuchKey,"
    )


def test_bad_row_aborts_with_line_and_column(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}bad.csv", "1,one\n2,two\nx3,three\n")
    loaded = table(db, "create table {t} (id int, v varchar(10))")
    run(db, f"insert into {loaded} values (0, 'kept')")
    db.commit()
    run(db, f"insert into {loaded} values (-1, 'undone')")
    detail = refusal(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}bad.csv' iam_role default csv")
    assert detail["C"] == "XX000"
    assert detail["M"] == LOAD_FAILED.format(loaded)
    assert "line_number:     3" in detail["D"]
    assert "colname:         id" in detail["D"]
    assert "err_code:        1207" in detail["D"]
    assert "Invalid digit, Value 'x', Pos 0, Type: Integer" in detail["D"]
    assert f"filename:        s3://{BUCKET}/{prefix}bad.csv" in detail["D"]
    # The error aborted the whole transaction, the insert before it included.
    assert rows(db, f"select id from {loaded}") == [(0,)]


def test_a_failed_load_leaves_its_row_in_sys_load_error_detail(
    db: Any, s3: Any, prefix: str, sandbox: Sandbox
) -> None:
    """https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html"""
    source = f"s3://{BUCKET}/{prefix}bad.csv"
    put(s3, f"{prefix}bad.csv", "1,one\n2,two\nx3,three\n")
    loaded = table(db, "create table {t} (id int, v varchar(10))")
    detail = refusal(db, f"copy {loaded} from '{source}' iam_role default csv")
    assert detail["M"] == LOAD_FAILED.format(loaded)
    # The load's transaction was rolled back (refusal() did), the row stays, as on Redshift.
    found = rows(
        db,
        "select user_id, query_id, trim(database_name), table_id, start_time, "
        "trim(file_name), line_number, trim(column_name), trim(column_type), position, "
        f"error_code, trim(error_message) from sys_load_error_detail where file_name = '{source}'",
    )
    assert len(found) == 1
    (user_id, query_id, database, table_id, start, file_name, line, column, column_type,
     position, code, message) = found[0]
    assert (database, file_name, line, column, column_type) == (
        sandbox.database, source, 3, "id", "int4"
    )
    assert (position, code) == (0, 1207)
    assert message == "Invalid digit, Value 'x', Pos 0, Type: Integer"
    assert query_id > 0
    assert start is not None
    assert rows(db, f"select '{loaded}'::regclass::oid::int") == [(table_id,)]
    assert rows(db, "select usesysid from pg_user where usename = current_user") == [(user_id,)]
    db.commit()


def test_other_users_do_not_see_my_load_errors(
    db: Any, s3: Any, prefix: str, sandbox: Sandbox
) -> None:
    """Superusers see every row of sys_load_error_detail, other users their own."""
    source = f"s3://{BUCKET}/{prefix}bad.csv"
    put(s3, f"{prefix}bad.csv", "x\n")
    loaded = table(db, "create table {t} (id int)")
    refusal(db, f"copy {loaded} from '{source}' iam_role default")
    where = f"from sys_load_error_detail where file_name = '{source}'"
    reader = f"load_reader_{uuid.uuid4().hex[:8]}"
    sandbox.sql(f"create role {reader}")
    try:
        assert sandbox.sql(f"select count(*) {where}") == [["1"]]
        assert sandbox.sql(f"set role {reader}; select count(*) {where}") == [["0"]]
    finally:
        sandbox.sql(f"drop role {reader}")


def test_stl_load_errors_is_refused_as_on_serverless(db: Any, sandbox: Sandbox) -> None:
    """STL views hold no serverless queries
    (https://docs.aws.amazon.com/redshift/latest/dg/r_STL_LOAD_ERRORS.html); Serverless answers
    "permission denied for relation stl_load_errors" (a public write-up; SQLSTATE unverified)."""
    for statement in (
        "select * from stl_load_errors",
        "select count(*) from pg_catalog.stl_load_errors where err_code = 1207",
    ):
        detail = refusal(db, statement)
        assert (detail["C"], detail["M"]) == (
            "42501", "permission denied for relation stl_load_errors"
        )
    reader = f"stl_reader_{uuid.uuid4().hex[:8]}"
    sandbox.sql(f"create role {reader}")
    try:
        with pytest.raises(SandboxError, match="permission denied for relation stl_load_errors"):
            sandbox.sql(f"set role {reader}; select * from stl_load_errors")
    finally:
        sandbox.sql(f"drop role {reader}")


def test_error_inside_a_transaction_block_aborts_it(db: Any, prefix: str) -> None:
    loaded = table(db, "create table {t} (id int)")
    with pytest.raises(ProgrammingError):
        run(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}missing' iam_role default")
    with pytest.raises(ProgrammingError) as caught:
        run(db, "select 1")
    assert caught.value.args[0]["C"] == "25P02"  # current transaction is aborted
    db.rollback()
    assert rows(db, "select 1") == [(1,)]


def test_extra_columns_and_syntax_errors(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}wide.txt", "1|a|b\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    detail = refusal(db, f"copy {loaded} from 's3://{BUCKET}/{prefix}wide.txt' iam_role default")
    assert detail["M"] == LOAD_FAILED.format(loaded)
    assert "Extra column(s) found" in detail["D"]
    source = f"s3://{BUCKET}/{prefix}wide.txt"
    detail = refusal(db, f"copy {loaded} from '{source}' iam_role default bogus")
    assert (detail["C"], detail["M"]) == ("42601", 'syntax error at or near "bogus"')


# --------------------------------------------------------------------------- UNLOAD


@pytest.fixture
def venue(db: Any) -> str:
    name = table(db, VENUE)
    run(db, f"""insert into {name} values
        (1, 'Pinewood Race|track', 'Akron', 'OH', 0),
        (2, 'Columbus "Crew" Stadium', 'Columbus', 'OH', 0),
        (6, 'New York Giants Stadium', 'East Rutherford', 'NJ', 80242)""")
    run(db, f"update {name} set venuecity = null where venueid = 6")
    db.commit()
    return name


def test_unload_pipe_delimited_from_the_developer_guide(
    db: Any, s3: Any, prefix: str, venue: str
) -> None:
    run(db, doc("""unload ('select * from venue order by venueid')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole';""", prefix).replace(
        "from venue ", f"from {venue} "))
    assert keys(s3, prefix) == [f"{prefix}unload/0000_part_00"]
    assert get(s3, f"{prefix}unload/0000_part_00").decode().splitlines() == [
        "1|Pinewood Race|track|Akron|OH|0",
        '2|Columbus "Crew" Stadium|Columbus|OH|0',
        "6|New York Giants Stadium||NJ|80242",
    ]
    assert db.notices[-1][b"M"] == b"UNLOAD completed, 3 record(s) unloaded successfully."


def test_unload_csv_header_parallel_off_overwrite(
    db: Any, s3: Any, prefix: str, venue: str
) -> None:
    statement = doc("""unload ('select * from venue where venueseats > 75000')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
header
parallel off;""", prefix).replace("from venue ", f"from {venue} ")
    run(db, statement.replace("header", "CSV DELIMITER AS '|' header"))
    assert keys(s3, prefix) == [f"{prefix}unload/000"]
    assert get(s3, f"{prefix}unload/000") == (
        b"venueid|venuename|venuecity|venuestate|venueseats\n6|New York Giants Stadium||NJ|80242\n"
    )
    detail = refusal(db, statement)
    assert detail["C"] == "XX000"
    assert detail["M"] == (
        "Specified unload destination on S3 is not empty. Consider using a different bucket / "
        "prefix, manually removing the target files in S3, or using the ALLOWOVERWRITE option."
    )
    run(db, statement.replace("parallel off", "parallel off allowoverwrite"))
    header = get(s3, f"{prefix}unload/000").splitlines()[0]
    assert header == b"venueid|venuename|venuecity|venuestate|venueseats"


def test_unload_csv_quotes_like_the_developer_guide(
    db: Any, s3: Any, prefix: str, venue: str
) -> None:
    run(db, f"""unload ('select * from {venue} where venueid < 3 order by venueid')
to 's3://{BUCKET}/{prefix}unload/'
iam_role '{LOADER}'
CSV DELIMITER AS '|';""")
    assert get(s3, f"{prefix}unload/0000_part_00").decode().splitlines() == [
        '1|"Pinewood Race|track"|Akron|OH|0',
        '2|"Columbus ""Crew"" Stadium"|Columbus|OH|0',
    ]


def test_unload_parquet_and_manifest_then_copy_back(
    db: Any, s3: Any, prefix: str, venue: str
) -> None:
    run(db, f"""unload ('select * from {venue}') to 's3://{BUCKET}/{prefix}venue_'
                iam_role default format as parquet manifest""")
    assert sorted(keys(s3, prefix)) == [
        f"{prefix}venue_0000_part_00.parquet", f"{prefix}venue_manifest",
    ]
    parquet = pq.read_table(io.BytesIO(get(s3, f"{prefix}venue_0000_part_00.parquet")))
    assert parquet.column_names == ["venueid", "venuename", "venuecity", "venuestate", "venueseats"]
    assert parquet.schema.field("venueid").type == pa.int16()
    assert parquet.schema.field("venueseats").type == pa.int32()
    assert parquet.column("venuecity").to_pylist() == ["Akron", "Columbus", None]
    manifest = json.loads(get(s3, f"{prefix}venue_manifest"))
    assert manifest["entries"] == [{"url": f"s3://{BUCKET}/{prefix}venue_0000_part_00.parquet"}]
    copy = table(db, VENUE)
    run(db, f"copy {copy} from 's3://{BUCKET}/{prefix}venue_manifest' iam_role default "
            "format as parquet manifest")
    original = rows(db, f"select * from {venue} order by 1")
    assert rows(db, f"select * from {copy} order by 1") == original


def test_unsupported_options_say_so(db: Any, prefix: str, venue: str) -> None:
    detail = refusal(db, doc("""unload ('select * from lineitem')
to 's3://mybucket/lineitem/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
PARQUET
PARTITION BY (l_shipdate);""", prefix))
    assert detail["C"] == "0A000"
    assert "the sandbox does not support UNLOAD … PARTITION BY" in detail["M"]


# --------------------------------------------------------------------------- protocol


def test_parameters_and_prepared_statement_reuse(db: Any, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}p.csv", "1,one\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    statement = f"copy {loaded} from %s iam_role %s csv"
    for _ in range(3):  # the driver reuses its prepared statement: Bind/Execute only
        run(db, statement, (f"s3://{BUCKET}/{prefix}p.csv", LOADER))
    assert rows(db, f"select count(*) from {loaded}") == [(3,)]
    detail = refusal(db, statement, (f"s3://{BUCKET}/{prefix}p.csv", STRANGER))
    assert detail["M"] == f"Not authorized to get credentials of role {STRANGER}"
    # The session goes on: ordinary statements, with parameters too, right after.
    cursor = run(db, "select %s::int + 1 as n", (41,))
    assert cursor.fetchall()[0][0] == 42


def test_other_statements_are_untouched(db: Any) -> None:
    cursor = run(db, "select 's3://bucket/key' as url, 'copy t from x' as c, 'UNLOAD' as u")
    assert tuple(cursor.fetchall()[0]) == ("s3://bucket/key", "copy t from x", "UNLOAD")
    assert [d[0] for d in cursor.description] == ["url", "c", "u"]
    scratch = table(db, "create table {t} (id int)")
    run(db, f"insert into {scratch} select generate_series(1, 5000)")
    assert rows(db, f"select count(*), sum(id) from {scratch}") == [(5000, 12502500)]
    with pytest.raises(ProgrammingError) as caught:
        run(db, "select * from no_such_table_here")
    assert caught.value.args[0]["M"] == 'relation "no_such_table_here" does not exist'
    db.rollback()


def _simple_query(sb: Sandbox, user: str, password: str, sql: str) -> list[tuple[bytes, bytes]]:
    """Log in over TLS by hand and send one simple Query ('Q'); the messages up to ReadyForQuery."""
    import socket
    import ssl
    import struct

    from rsauth._pgwire import md5_response
    from rsauth.sandbox._pgwire import SSL_REQUEST, message, startup_packet

    context = ssl.create_default_context(cafile=sb.env["SSL_CERT_FILE"])
    raw = socket.create_connection((sb.host, sb.port), timeout=30)
    with raw:
        raw.sendall(struct.pack("!ii", 8, SSL_REQUEST))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(startup_packet({"user": user, "database": sb.database}))

            def receive() -> tuple[bytes, bytes]:
                header = b""
                while len(header) < 5:
                    header += tls.recv(5 - len(header))
                size = struct.unpack("!i", header[1:])[0] - 4
                body = b""
                while len(body) < size:
                    body += tls.recv(size - len(body))
                return header[:1], body

            kind, body = receive()
            assert kind == b"R"
            salt = body[4:8]
            tls.sendall(message(b"p", md5_response(user.encode(), password.encode(), salt) + b"\0"))
            while receive()[0] != b"Z":
                pass
            tls.sendall(message(b"Q", sql.encode() + b"\0"))
            answers = []
            while True:
                answers.append(receive())
                if answers[-1][0] == b"Z":
                    tls.sendall(message(b"X"))
                    return answers


def test_simple_query_protocol(db: Any, sandbox: Sandbox, s3: Any, prefix: str) -> None:
    put(s3, f"{prefix}one.txt", "1|x\n2|y\n")
    loaded = table(db, "create table {t} (id int, v varchar(5))")
    namespace = boto3.client("redshift-serverless").get_namespace(
        namespaceName=sandbox.namespace
    )["namespace"]
    secret = json.loads(boto3.client("secretsmanager").get_secret_value(
        SecretId=namespace["adminPasswordSecretArn"]
    )["SecretString"])
    answers = _simple_query(sandbox, secret["username"], secret["password"], (
        f"begin; copy {loaded} from 's3://{BUCKET}/{prefix}one.txt' iam_role default; "
        f"select count(*) from {loaded}; commit"
    ))
    kinds = [kind for kind, _ in answers]
    assert kinds == [b"C", b"N", b"C", b"T", b"D", b"C", b"C", b"Z"]
    assert answers[2][1] == b"COPY 2\0"
    assert answers[4][1].endswith(b"2")
    assert rows(db, f"select count(*) from {loaded}") == [(2,)]
    answers = _simple_query(sandbox, secret["username"], secret["password"], (
        f"copy {loaded} from 's3://{BUCKET}/{prefix}none' iam_role default"
    ))
    assert [kind for kind, _ in answers] == [b"E", b"Z"]
    assert b"The specified S3 prefix" in answers[0][1]
