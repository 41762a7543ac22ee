"""rsauth.etl's COPY and UNLOAD builders: the documented forms, and nothing injected.

Golden strings are statements from the AWS Redshift Database Developer Guide (COPY
examples: r_COPY_command_examples, COPY from columnar formats; UNLOAD examples:
r_UNLOAD_command_examples, r_UNLOAD), copied as they are printed there. Adapted: the
example account id ``0123456789012`` (13 digits, not a valid ARN) becomes
``123456789012``; statements the guide prints in the pipe-delimited text format get
the ``csv`` keyword, the default of rsauth.etl, which offers csv, json and parquet
only (marked "adapted: csv"). They are compared after :func:`normalized`: keyword
case, whitespace, the closing semicolon and the grammar's optional ``AS`` carry no
meaning; literals and identifiers must match character for character.

The hypothesis tests parse every generated statement back with the sandbox's own
Redshift grammar (an independent tokenizer and parser) and check it has exactly the
intended structure.
"""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rsauth
from rsauth import etl
from rsauth.etl import copy_sql, unload_sql
from rsauth.sandbox._copysql import (
    SqlError,
    parse_copy,
    parse_unload,
    split_statements,
    tokenize,
)

ROLE = "arn:aws:iam::123456789012:role/MyRedshiftRole"
OTHER = "arn:aws:iam::123456789012:role/MyOtherRole"

# Keywords after which the grammar writes an optional AS (DELIMITER [AS] '|', ...).
_OPTIONAL_AS_AFTER = {"DELIMITER", "QUOTE", "NULL", "FORMAT", "MAXFILESIZE", "ROWGROUPSIZE",
                      "REGION", "IGNOREHEADER"}


def normalized(sql: str) -> list[str]:
    """The statement's tokens: words upper-cased, literals and quoted names as written."""
    tokens = [token.raw if token.kind in ("string", "ident") else token.text.upper()
              for token in tokenize(sql)]
    while tokens and tokens[-1] == ";":
        tokens.pop()
    return [token for index, token in enumerate(tokens)
            if not (token == "AS" and index and tokens[index - 1] in _OPTIONAL_AS_AFTER)]


def same(generated: str, documented: str) -> None:
    documented = documented.replace("0123456789012", "123456789012")
    assert normalized(generated) == normalized(documented), generated


# --------------------------------------------------------------------------- COPY, golden


COPY_EXAMPLES: list[tuple[str, dict[str, Any], str]] = [
    # Load CATEGORY from a CSV file.
    ("category s3://mybucket/data/category_csv.txt", {}, """copy category
from 's3://mybucket/data/category_csv.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv;"""),
    ("category s3://mybucket/data/category_csv.txt", {"quote_as": "%"}, """copy category
from 's3://mybucket/data/category_csv.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv quote as '%';"""),
    # Load from JSON data using the 'auto' option; using a JSONPaths file.
    ("category s3://mybucket/category_object_auto.json", {"format": "json"}, """copy category
from 's3://mybucket/category_object_auto.json'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
json 'auto';"""),
    ("category s3://mybucket/category_object_paths.json",
     {"format": "json", "json_paths": "s3://mybucket/category_jsonpath.json"}, """copy category
from 's3://mybucket/category_object_paths.json'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
json 's3://mybucket/category_jsonpath.json';"""),
    # COPY from columnar data formats.
    ("listing s3://mybucket/data/listings/parquet/", {"format": "parquet"}, """copy listing
from 's3://mybucket/data/listings/parquet/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
format as parquet;"""),
    # Load TIME from a pipe-delimited GZIP file (adapted: csv).
    ("time s3://mybucket/data/timerows.gz", {"gzip": True, "delimiter": "|"}, """copy time
from 's3://mybucket/data/timerows.gz'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
gzip
delimiter '|';"""),
    # Load EVENT with options (adapted: csv, without REMOVEQUOTES, a text-format option).
    ("event s3://mybucket/data/allevents_pipe.txt",
     {"empty_as_null": True, "blanks_as_null": True, "max_error": 5, "delimiter": "|",
      "timeformat": "YYYY-MM-DD HH:MI:SS"}, """copy event
from 's3://mybucket/data/allevents_pipe.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
emptyasnull
blanksasnull
maxerror 5
delimiter '|'
timeformat 'YYYY-MM-DD HH:MI:SS';"""),
    # Using a manifest to specify data files (adapted: csv).
    ("customer s3://mybucket/cust.manifest", {"manifest": True}, """copy customer
from 's3://mybucket/cust.manifest'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
manifest;"""),
    # Load VENUE with explicit values for an IDENTITY column (adapted: csv).
    ("venue s3://mybucket/data/venue.txt", {"explicit_ids": True}, """copy venue
from 's3://mybucket/data/venue.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
explicit_ids;"""),
    # Load a timestamp (adapted: csv).
    ("timestamp1 s3://mybucket/data/time.txt", {"timeformat": "YYYY-MM-DD HH:MI:SS"},
     """copy timestamp1
from 's3://mybucket/data/time.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
timeformat 'YYYY-MM-DD HH:MI:SS';"""),
    # Load from an unload with NULL AS (adapted: csv).
    ("loadvenuenulls s3://mybucket/nulls/", {"null_as": "fred"}, """copy loadvenuenulls
from 's3://mybucket/nulls/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
null as 'fred';"""),
]


@pytest.mark.parametrize(("target", "options", "documented"), COPY_EXAMPLES)
def test_copy_matches_the_developer_guide(
    target: str, options: dict[str, Any], documented: str
) -> None:
    table, source = target.split()
    same(copy_sql(table, source, iam_role=ROLE, **options), documented)


def test_copy_with_columns_from_the_developer_guide() -> None:
    # Load data from a file with default values (adapted: csv).
    sql = copy_sql("venue_new", "s3://mybucket/data/venue_noseats.txt", iam_role=ROLE,
                   columns=["venueid", "venuename", "venuecity", "venuestate"], delimiter="|")
    same(sql, """copy venue_new(venueid, venuename, venuecity, venuestate)
from 's3://mybucket/data/venue_noseats.txt'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
delimiter '|';""")


def test_iam_role_default_is_unquoted() -> None:
    sql = copy_sql("sales", "s3://my-bucket/sales/", ignore_header=1)
    assert sql.splitlines()[2] == "IAM_ROLE default"
    assert sql == (
        "COPY sales\nFROM 's3://my-bucket/sales/'\nIAM_ROLE default\nCSV\nIGNOREHEADER 1"
    )
    assert copy_sql("sales", "s3://my-bucket/sales/", iam_role="DEFAULT") == copy_sql(
        "sales", "s3://my-bucket/sales/"
    )


def test_role_chains() -> None:
    as_list = copy_sql("t", "s3://bucket/k", iam_role=[ROLE, OTHER])
    as_text = copy_sql("t", "s3://bucket/k", iam_role=f"{ROLE}, {OTHER}")
    assert as_list == as_text
    assert f"IAM_ROLE '{ROLE},{OTHER}'" in as_list.splitlines()
    chain = [f"arn:aws:iam::123456789012:role/r{i}" for i in range(10)]
    copy_sql("t", "s3://bucket/k", iam_role=chain)
    with pytest.raises(rsauth.ConfigurationError, match="1 to 10"):
        copy_sql("t", "s3://bucket/k", iam_role=[*chain, ROLE])
    with pytest.raises(rsauth.ConfigurationError, match="cannot be part of a role chain"):
        copy_sql("t", "s3://bucket/k", iam_role=[ROLE, "default"])


@pytest.mark.parametrize("bad", [
    "arn:aws:iam::12345678901:role/short-account",
    "arn:aws:iam::0123456789012:role/MyRedshiftRole",
    "arn:aws:iam::123456789012:user/not-a-role",
    "arn:aws:iam::123456789012:role/with space",
    "arn:aws:iam::123456789012:role/x' --",
    "",
    "MyRedshiftRole",
])
def test_role_arns_are_validated(bad: str) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="iam_role"):
        copy_sql("t", "s3://bucket/k", iam_role=bad)


# --------------------------------------------------------------------------- UNLOAD, golden


UNLOAD_EXAMPLES: list[tuple[str, str, dict[str, Any], str]] = [
    # Unload VENUE to a CSV file.
    ("select * from venue", "s3://mybucket/unload/", {}, """unload ('select * from venue')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
CSV;"""),
    # Unload VENUE to a CSV file using a delimiter.
    ("select * from venue", "s3://mybucket/unload/", {"delimiter": "|"},
     """unload ('select * from venue')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
CSV DELIMITER AS '|';"""),
    # Unload the VENUE table to a JSON file.
    ("select * from venue", "s3://mybucket/unload/", {"format": "json"},
     """unload ('select * from venue')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
JSON;"""),
    # Unload LINEITEM to Parquet (PARTITION BY is not offered: without it).
    ("select * from lineitem", "s3://mybucket/lineitem/", {"format": "parquet"},
     """unload ('select * from lineitem')
to 's3://mybucket/lineitem/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
PARQUET;"""),
    # The select-statement with quotation marks (UNLOAD, Parameters).
    ("select * from venue where venuestate='NV'", "s3://mybucket/unload/", {},
     """unload ('select * from venue where venuestate=''NV''')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv;"""),
    # Unload VENUE with a manifest file (adapted: csv), MANIFEST VERBOSE, ALLOWOVERWRITE.
    ("select * from venue", "s3://mybucket/venue_pipe_", {"manifest": True},
     """unload ('select * from venue')
to 's3://mybucket/venue_pipe_' iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
manifest;"""),
    ("select * from venue", "s3://mybucket/unload_venue_folder/", {"manifest": "verbose"},
     """unload ('select * from venue')
to 's3://mybucket/unload_venue_folder/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
manifest verbose;"""),
    ("select * from venue", "s3://mybucket/venue_pipe_",
     {"manifest": True, "allow_overwrite": True}, """unload ('select * from venue')
to 's3://mybucket/venue_pipe_'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
manifest allowoverwrite;"""),
    # Unload VENUE with a header (adapted: csv).
    ("select * from venue where venueseats > 75000", "s3://mybucket/unload/",
     {"header": True, "parallel": False},
     """unload ('select * from venue where venueseats > 75000')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
header
parallel off;"""),
    # Unload VENUE to smaller files (adapted: csv).
    ("select * from venue", "s3://mybucket/unload/", {"max_file_size": "1 gb"},
     """unload ('select * from venue')
to 's3://mybucket/unload/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
maxfilesize 1 gb;"""),
    # Unload VENUE serially, compressed (adapted: csv).
    ("select * from lineorder", "s3://mybucket/unload/lineorder_serial_",
     {"parallel": False, "gzip": True}, """unload ('select * from lineorder')
to 's3://mybucket/unload/lineorder_serial_'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
parallel off gzip;"""),
    # Unload VENUE data to a tab-delimited file (adapted: csv).
    ("select venueid, venuename, venueseats from venue", "s3://mybucket/venue_tab_",
     {"delimiter": "\t"}, """unload ('select venueid, venuename, venueseats from venue')
to 's3://mybucket/venue_tab_'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
delimiter as '\\t';"""),
    # Unload VENUE to a GZIP-compressed text file with an extension (adapted: csv).
    ("select * from venue", "s3://mybucket/venue_tab_", {"extension": "txt.gz", "gzip": True},
     """unload ('select * from venue')
to 's3://mybucket/venue_tab_'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
extension 'txt.gz'
gzip;"""),
    # Unload using NULL AS (adapted: csv).
    ("select * from venue", "s3://mybucket/nulls/", {"null_as": "fred"},
     """unload ('select * from venue')
to 's3://mybucket/nulls/'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole'
csv
null as 'fred';"""),
]


@pytest.mark.parametrize(("query", "destination", "options", "documented"), UNLOAD_EXAMPLES)
def test_unload_matches_the_developer_guide(
    query: str, destination: str, options: dict[str, Any], documented: str
) -> None:
    same(unload_sql(query, destination, iam_role=ROLE, **options), documented)


def test_unload_of_a_multiline_join_from_the_developer_guide() -> None:
    query = """select venuecity, venuestate, caldate, pricepaid,
sum(pricepaid) over(partition by venuecity, venuestate
order by caldate rows between 3 preceding and 3 following) as winsum
from sales join date on sales.dateid=date.dateid
join event on event.eventid=sales.eventid
join venue on event.venueid=venue.venueid
order by 1,2"""
    sql = unload_sql(query, "s3://mybucket/tickit/winsum", iam_role=ROLE)
    same(sql, f"""unload ('{query}')
to 's3://mybucket/tickit/winsum'
iam_role 'arn:aws:iam::0123456789012:role/MyRedshiftRole' csv;""")
    assert parse_unload(sql).query == query


def test_every_option_in_the_table_renders() -> None:
    values: dict[str, Any] = {
        "flag": True, "on_off": False, "count": 2, "char": ";", "text": "a'b\\c",
        "region": "eu-west-1", "size": 100, "json_paths": "auto ignorecase", "manifest": True,
    }
    for name, option in etl.OPTIONS.items():
        for statement, build in (("copy", copy_sql), ("unload", unload_sql)):
            for fmt in sorted(getattr(option, statement)):
                sql = build("t", "s3://bucket/key", format=fmt, **{name: values[option.kind]})
                assert option.keyword in sql, (name, statement, fmt)


# --------------------------------------------------------------------------- literals


def test_literals_double_quotes_and_backslashes() -> None:
    sql = copy_sql("t", "s3://bucket/it's\\here", null_as="\\N")
    stmt = parse_copy(sql)
    assert stmt.source == "s3://bucket/it's\\here"
    assert stmt.null_as == "\\N"
    assert "FROM 's3://bucket/it''s\\\\here'" in sql
    assert "NULL AS '\\\\N'" in sql


def test_the_unload_query_is_one_literal() -> None:
    query = "select 'a''b' as q, '\\d' as r, 'x;y' as s -- ') to 's3://evil/'"
    sql = unload_sql(query, "s3://bucket/out/")
    stmt = parse_unload(sql)
    assert stmt.query == query
    assert stmt.target == "s3://bucket/out/"
    assert len(split_statements(sql)) == 1


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["access_key_id", "secret_access_key", "session_token",
                                  "credentials", "aws_access_key_id", "master_symmetric_key"])
def test_aws_keys_are_refused(name: str) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="never writes AWS keys into SQL"):
        copy_sql("t", "s3://bucket/k", **{name: "AKIAIOSFODNN7EXAMPLE"})
    with pytest.raises(rsauth.ConfigurationError, match="never writes AWS keys into SQL"):
        unload_sql("select 1", "s3://bucket/k", **{name: "x"})


def test_key_like_values_are_refused() -> None:
    with pytest.raises(rsauth.ConfigurationError, match="AWS key"):
        copy_sql("t", "s3://bucket/k", null_as="AKIAIOSFODNN7EXAMPLE")
    with pytest.raises(rsauth.ConfigurationError, match="AWS key"):
        unload_sql("select 'aws_secret_access_key=abc'", "s3://bucket/k")
    with pytest.raises(rsauth.ConfigurationError, match="an IAM role is required"):
        copy_sql("t", "s3://bucket/k", iam_role=None)  # type: ignore[arg-type]


def test_unknown_options_and_wrong_types_name_them() -> None:
    with pytest.raises(rsauth.ConfigurationError) as caught:
        copy_sql("t", "s3://bucket/k", ignoreheader=1)
    text = str(caught.value)
    assert "ignoreheader=" in text
    assert "did you mean ignore_header=?" in text
    assert "accepted with format='csv': " in text
    assert "quote_as" in text
    with pytest.raises(rsauth.ConfigurationError, match=r"ignore_header='1': expected a whole"):
        copy_sql("t", "s3://bucket/k", ignore_header="1")
    with pytest.raises(rsauth.ConfigurationError, match=r"gzip=1: expected True or False"):
        copy_sql("t", "s3://bucket/k", gzip=1)
    with pytest.raises(rsauth.ConfigurationError, match="header= is an UNLOAD option"):
        copy_sql("t", "s3://bucket/k", header=True)
    with pytest.raises(rsauth.ConfigurationError, match="ignore_header= is an COPY option"):
        unload_sql("select 1", "s3://bucket/k", ignore_header=1)
    with pytest.raises(rsauth.ConfigurationError, match="not accepted by UNLOAD with format='p"):
        unload_sql("select 1", "s3://bucket/k", format="parquet", header=True)
    with pytest.raises(rsauth.ConfigurationError, match="not accepted by COPY with format='json'"):
        copy_sql("t", "s3://bucket/k", format="json", delimiter="|")
    with pytest.raises(rsauth.ConfigurationError, match="format='CSV': accepted: 'csv'"):
        copy_sql("t", "s3://bucket/k", format="CSV")
    with pytest.raises(rsauth.ConfigurationError, match="choose one compression"):
        unload_sql("select 1", "s3://bucket/k", gzip=True, bzip2=True)
    with pytest.raises(rsauth.ConfigurationError, match="cannot be used together"):
        unload_sql("select 1", "s3://bucket/k", allow_overwrite=True, cleanpath=True)


@pytest.mark.parametrize("uri", [
    "s3://Bucket/key", "s3://ab/key", "s3://bucket_x/k", "s3://192.168.1.1/k", "s3://a..b/k",
    "s3://-bucket/k", "https://bucket/k", "s3:/bucket/k", "s3://bucket/line\nbreak",
    "s3://xn--bucket/k", "bucket/key",
])
def test_s3_uris_are_validated(uri: str) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="source="):
        copy_sql("t", uri)


def test_identifiers() -> None:
    assert copy_sql("Staging.Sales", "s3://bucket/k").splitlines()[0] == "COPY staging.sales"
    assert copy_sql('"Staging"."Sales 2024"', "s3://bucket/k").splitlines()[0] == (
        'COPY "Staging"."Sales 2024"'
    )
    assert copy_sql("user", "s3://bucket/k").splitlines()[0] == 'COPY "user"'
    assert copy_sql("t", "s3://bucket/k", columns=["id", '"Name"', "group"]).splitlines()[0] == (
        'COPY t (id, "Name", "group")'
    )
    for bad in ["my table", "t;drop table x", 'a"b', "a.b.c.d", "1abc", "", '"x', "a..b"]:
        with pytest.raises(rsauth.ConfigurationError, match="table="):
            copy_sql(bad, "s3://bucket/k")


def test_all_is_sorted_and_complete() -> None:
    assert etl.__all__ == sorted(etl.__all__)
    public = {name for name, value in vars(etl).items()
              if not name.startswith("_") and getattr(value, "__module__", None) == etl.__name__}
    public |= {"FORMATS", "OPTIONS"}
    assert public == set(etl.__all__)


# --------------------------------------------------------------------------- hypothesis


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


names = st.text(min_size=1, max_size=40)
keys = st.text(min_size=0, max_size=60)
bucket = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(schema=names, table=names, columns=st.lists(names, min_size=1, max_size=4), key=keys,
       bucket=bucket)
def test_names_and_paths_are_quoted_or_rejected(
    schema: str, table: str, columns: list[str], key: str, bucket: str
) -> None:
    source = f"s3://{bucket}/{key}"
    try:
        sql = copy_sql(f"{quoted(schema)}.{quoted(table)}", source,
                       columns=[quoted(column) for column in columns])
    except rsauth.ConfigurationError:
        # Rejected only for what Redshift itself cannot hold.
        assert any(not text.isprintable() or len(text.encode()) > 127
                   for text in (schema, table, *columns)) or not key.isprintable()
        return
    assert len(split_statements(sql)) == 1
    stmt = parse_copy(sql)
    assert stmt.table_name == table
    assert stmt.columns == columns
    assert stmt.source == source
    assert stmt.auth.default_role
    assert not stmt.auth.roles
    assert stmt.auth.access_key_id is None
    assert stmt.format == "csv"


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=40))
def test_raw_table_text_never_injects(text: str) -> None:
    try:
        sql = copy_sql(text, "s3://bucket/key")
    except rsauth.ConfigurationError:
        return
    assert len(split_statements(sql)) == 1
    stmt = parse_copy(sql)
    assert stmt.source == "s3://bucket/key"
    assert stmt.auth.default_role
    assert [t.text for t in tokenize(sql)][-1] == "csv"


@settings(max_examples=300, deadline=None)
@given(query=st.text(min_size=1, max_size=80).filter(str.strip),
       null=st.text(max_size=10), key=keys)
def test_unload_query_and_literals_round_trip(query: str, null: str, key: str) -> None:
    destination = f"s3://bucket/{key}"
    try:
        sql = unload_sql(query, destination, null_as=null)
    except rsauth.ConfigurationError:
        assert "\0" in query + null or not key.isprintable()
        return
    assert len(split_statements(sql)) == 1
    stmt = parse_unload(sql)
    assert stmt.query == query
    assert stmt.target == destination
    assert stmt.null_as == null
    assert stmt.auth.default_role
    assert stmt.format == "csv"


@settings(max_examples=100, deadline=None)
@given(value=st.text(alphabet=string.printable, min_size=1, max_size=1))
def test_delimiters_round_trip(value: str) -> None:
    try:
        sql = copy_sql("t", "s3://bucket/k", delimiter=value)
    except rsauth.ConfigurationError:
        assert value in "\n\r"
        return
    try:
        assert parse_copy(sql).delimiter == value
    except SqlError:  # pragma: no cover - the parser must read every statement we write
        pytest.fail(sql)


def test_statements_have_no_trailing_semicolon() -> None:
    assert not re.search(r";\s*$", copy_sql("t", "s3://bucket/k"))


def _from_command_line(statement: str, name: str, text: str) -> str:
    """The statement with one option read as ``rsauth copy/unload -o NAME=TEXT`` reads it."""
    options: dict[str, Any] = {name: etl._parse_option(name, text)}
    if statement == "copy":
        return copy_sql("t", "s3://bucket/k", **options)
    return unload_sql("select 1", "s3://bucket/k", **options)


# str.isdigit() holds for superscripts (int() refuses them) and for other scripts' digits
# (int() reads ARABIC-INDIC DIGIT THREE as 3).
@pytest.mark.parametrize(
    ("name", "text"),
    [("ignore_header", "\u00b2"), ("ignore_header", "\u0663"), ("max_error", "\u00b9\u2070")],
)
def test_command_line_counts_with_non_ascii_digits_are_configuration_errors(
    name: str, text: str
) -> None:
    with pytest.raises(rsauth.ConfigurationError, match=name):
        _from_command_line("copy", name, text)


@pytest.mark.parametrize("text", ["\u00b2", "\u0665", "\u0665 MB", "5\u00a0MB"])
def test_sizes_are_ascii_digits(text: str) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="max_file_size"):
        _from_command_line("unload", "max_file_size", text)


@pytest.mark.parametrize("role", ["arn:aws:iam::123456789012:role/r\u00e9le",
                                  "arn:aws:iam::\u0661" + "2" * 11 + ":role/etl"])
def test_role_arns_are_ascii(role: str) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="iam_role"):
        copy_sql("t", "s3://bucket/k", iam_role=role)
