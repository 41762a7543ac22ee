"""Configuration: argument > RSAUTH_* environment > default, validated with clear messages."""

from __future__ import annotations

import copy
import pickle
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsauth import ConfigurationError
from rsauth._config import (
    SETTINGS,
    UNSET,
    Options,
    is_region_name,
    is_workgroup_name,
    resolve,
    resolve_region,
)

ROLE = "arn:aws:iam::123456789012:role/RedshiftAdmin"


def test_defaults() -> None:
    options = resolve({"workgroup": "analytics"}, {})
    assert options.method == "iam"
    assert options.duration == 900
    assert options.database is None
    assert options.db_roles == ()
    assert options.fallback is False


def test_environment_fills_what_arguments_leave_out() -> None:
    env = {
        "RSAUTH_WORKGROUP": "from-env",
        "RSAUTH_DATABASE": "envdb",
        "RSAUTH_METHOD": "superuser",
        "RSAUTH_DURATION": "1800",
        "RSAUTH_ROLE_ARN": ROLE,
        "RSAUTH_CUSTOM_DOMAIN": "db.example.com",
    }
    options = resolve({}, env)
    assert options.workgroup == "from-env"
    assert options.database == "envdb"
    assert options.method == "superuser"
    assert options.duration == 1800
    assert options.role_arn == ROLE
    assert options.custom_domain == "db.example.com"


def test_argument_beats_environment() -> None:
    env = {"RSAUTH_WORKGROUP": "from-env", "RSAUTH_DURATION": "1800", "RSAUTH_METHOD": "secret"}
    options = resolve({"workgroup": "from-arg", "duration": 3600, "method": "iam"}, env)
    assert (options.workgroup, options.duration, options.method) == ("from-arg", 3600, "iam")


def test_none_and_unset_mean_not_given() -> None:
    env = {"RSAUTH_WORKGROUP": "from-env"}
    assert resolve({"workgroup": None}, env).workgroup == "from-env"
    assert resolve({"workgroup": UNSET}, env).workgroup == "from-env"


def test_empty_environment_variable_is_ignored() -> None:
    assert resolve({"workgroup": "wg1"}, {"RSAUTH_DURATION": ""}).duration == 900


def test_every_setting_with_an_environment_variable_is_rsauth_prefixed() -> None:
    envs = {setting.env for setting in SETTINGS if setting.env}
    assert envs == {
        "RSAUTH_WORKGROUP",
        "RSAUTH_CUSTOM_DOMAIN",
        "RSAUTH_DATABASE",
        "RSAUTH_METHOD",
        "RSAUTH_SECRET_ID",
        "RSAUTH_ROLE_ARN",
        "RSAUTH_DURATION",
        "RSAUTH_RESUME_TIMEOUT",
    }


@pytest.mark.parametrize(
    ("arguments", "env", "names"),
    [
        ({"workgroup": "AB"}, {}, ["workgroup='AB'", "3 to 64", "a-z", "0-9"]),
        ({"workgroup": "Analytics"}, {}, ["workgroup='Analytics'", "lowercase"]),
        ({"workgroup": "x" * 65}, {}, ["workgroup=", "3 to 64"]),
        ({"workgroup": "a_b_c"}, {}, ["workgroup='a_b_c'", "hyphens"]),
        ({}, {"RSAUTH_WORKGROUP": "BAD!"}, ["RSAUTH_WORKGROUP='BAD!'", "3 to 64"]),
        ({"workgroup": "wg1", "duration": 30}, {}, ["duration=30", "900", "3600"]),
        ({"workgroup": "wg1", "duration": 3601}, {}, ["duration=3601", "900", "3600"]),
        ({"workgroup": "wg1", "duration": "soon"}, {}, ["duration='soon'", "900", "3600"]),
        ({"workgroup": "wg1"}, {"RSAUTH_DURATION": "60"}, ["RSAUTH_DURATION='60'", "900 to 3600"]),
        ({"workgroup": "wg1", "duration": True}, {}, ["duration=True", "900"]),
        (
            {"workgroup": "wg1", "role_arn": "RedshiftAdmin"},
            {},
            ["role_arn='RedshiftAdmin'", "arn:aws:iam::123456789012:role/"],
        ),
        (
            {"workgroup": "wg1", "role_arn": "arn:aws:iam::123:role/x"},
            {},
            ["role_arn=", "IAM role ARN"],
        ),
        (
            {"workgroup": "wg1", "role_arn": "arn:aws:iam::123456789012:user/x"},
            {},
            ["role_arn=", "IAM role ARN"],
        ),
        (
            {"workgroup": "wg1", "method": "kerberos"},
            {},
            ["method='kerberos'", "auto, iam, secret, superuser, password"],
        ),
        ({"workgroup": "wg1"}, {"RSAUTH_METHOD": "sso"}, ["RSAUTH_METHOD='sso'", "auto, iam"]),
        (
            {"workgroup": "wg1", "role_arn": ROLE, "db_roles": ["ok", "no:colon"]},
            {},
            ["db_roles", "'no:colon'", "letters, digits"],
        ),
        (
            {"workgroup": "wg1", "role_arn": ROLE, "db_roles": ["1st"]},
            {},
            ["db_roles", "'1st'", "not starting with a digit"],
        ),
        (
            {"workgroup": "wg1", "role_arn": ROLE, "db_roles": ["r" * 100] * 3},
            {},
            ["db_roles", "256"],
        ),
        ({"workgroup": "wg1", "port": 0}, {}, ["port=0", "1 to 65535"]),
        ({"custom_domain": "not a domain"}, {}, ["custom_domain='not a domain'", "DNS name"]),
        ({"workgroup": "wg1", "fallback": "maybe"}, {}, ["fallback='maybe'", "True or False"]),
    ],
)
def test_validation_errors_name_field_and_accepted_values(
    arguments: dict[str, Any], env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(arguments, env)
    for name in names:
        assert name in str(info.value)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="workgroup"):
        resolve({"workgroup": "X"}, {})


def test_provisioned_cluster_host_is_refused() -> None:
    host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
    with pytest.raises(ConfigurationError, match=r"provisioned Redshift cluster.*Serverless"):
        resolve({"host": host, "user": "u", "password": "p"}, {})


def test_serverless_host_is_accepted() -> None:
    host = "analytics.123456789012.us-east-1.redshift-serverless.amazonaws.com"
    options = resolve({"host": host, "user": "u", "password": "p"}, {})
    assert options.host == host
    assert options.method == "password"


@pytest.mark.parametrize(
    ("arguments", "method"),
    [
        ({"workgroup": "wg1"}, "iam"),
        ({"workgroup": "wg1", "user": "u", "password": "p"}, "password"),
        ({"workgroup": "wg1", "secret_id": "app-login"}, "secret"),
        ({"secret_id": "app-login"}, "secret"),
        ({"workgroup": "wg1", "method": "superuser"}, "superuser"),
        ({"workgroup": "wg1", "method": "SECRET"}, "secret"),
    ],
)
def test_auto_picks_the_method(arguments: dict[str, Any], method: str) -> None:
    assert resolve(arguments, {}).method == method


def test_superuser_is_never_chosen_automatically() -> None:
    assert resolve({"workgroup": "wg1", "role_arn": ROLE}, {}).method == "iam"


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"method": "iam"}, "needs workgroup="),
        ({"workgroup": "wg1", "user": "u"}, "user= is not used by method='iam'"),
        ({"workgroup": "wg1", "method": "password", "user": "u"}, "needs both user= and password="),
        (
            {"method": "password", "user": "u", "password": "p"},
            "workgroup=, custom_domain= or host=",
        ),
        ({"workgroup": "wg1", "password": "p"}, "password= is only used by method='password'"),
        ({"workgroup": "wg1", "method": "iam", "secret_id": "s"}, "secret_id= is only used"),
        ({"method": "secret"}, "needs secret_id= or workgroup="),
        ({"workgroup": "wg1", "db_roles": ["a"]}, "give role_arn= too"),
        ({"workgroup": "wg1", "frobnicate": 1}, "unknown option(s): frobnicate"),
    ],
)
def test_inconsistent_combinations(arguments: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(arguments, {})
    assert fragment in str(info.value)


def test_password_never_in_error_or_repr() -> None:
    options = resolve({"workgroup": "wg1", "user": "u", "password": "hunter2"}, {})
    assert "hunter2" not in repr(options)
    assert "workgroup='wg1'" in repr(options)
    assert "hunter2" not in repr(options.replace(method="secret"))


def test_options_are_values() -> None:
    # Values, as the frozen dataclass they replace: equal and hashed by their fields (the
    # password included, which is why no cache key holds an Options).
    options = resolve({"workgroup": "wg1", "user": "u", "password": "hunter2"}, {})
    same = Options(method="password", workgroup="wg1", user="u", password="hunter2")
    assert options == same
    assert hash(options) == hash(same)
    assert options != Options(method="password", workgroup="wg1", user="u", password="other")
    changed = options.replace(method="secret", fallback=True)
    assert (changed.method, changed.fallback, changed.workgroup) == ("secret", True, "wg1")
    assert options.method == "password"
    with pytest.raises(AttributeError):
        options.method = "iam"  # resolutions are cached and shared: read-only
    assert copy.copy(options) == options
    assert pickle.loads(pickle.dumps(options)) == options  # noqa: S301 - our own bytes
    assert changed == Options(
        method="secret", workgroup="wg1", user="u", password="hunter2", fallback=True
    )


def test_db_roles_from_list_and_string() -> None:
    listed = resolve({"workgroup": "wg1", "role_arn": ROLE, "db_roles": ["analyst", "etl"]}, {})
    assert listed.db_roles == ("analyst", "etl")
    text = resolve({"workgroup": "wg1", "role_arn": ROLE, "db_roles": "analyst, etl"}, {})
    assert text.db_roles == ("analyst", "etl")


class TestRegion:
    def test_argument_first(self) -> None:
        env = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}
        assert resolve_region("us-west-2", "ap-south-1", env, "sa-east-1") == "us-west-2"

    def test_broker_default_second(self) -> None:
        env = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}
        assert resolve_region(None, "ap-south-1", env, "sa-east-1") == "ap-south-1"

    def test_aws_region_before_aws_default_region(self) -> None:
        env = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}
        assert resolve_region(None, None, env, "sa-east-1") == "eu-west-1"

    def test_aws_default_region_before_profile(self) -> None:
        assert (
            resolve_region(None, None, {"AWS_DEFAULT_REGION": "eu-west-2"}, "sa-east-1")
            == "eu-west-2"
        )

    def test_profile_last(self) -> None:
        assert resolve_region(None, None, {}, "sa-east-1") == "sa-east-1"

    def test_missing_region_names_every_way_to_set_it(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            resolve_region(None, None, {}, None)
        for fragment in (
            "region=",
            "Broker(region=)",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "profile",
        ):
            assert fragment in str(info.value)


def test_resolution_is_reused_but_follows_the_environment() -> None:
    from rsauth._config import resolve

    first = resolve({"workgroup": "analytics"}, {})
    assert resolve({"workgroup": "analytics"}, {}) is first
    changed = resolve({"workgroup": "analytics"}, {"RSAUTH_DURATION": "1800"})
    assert changed.duration == 1800
    assert resolve({"workgroup": "analytics"}, {}).duration == 900


def test_a_password_is_never_kept_for_reuse() -> None:
    from rsauth._config import _RESOLVED, resolve

    resolve({"method": "password", "host": "db.example.com", "user": "u", "password": "pw-1"}, {})
    assert not [key for key in list(_RESOLVED.keys()) if "pw-1" in repr(key)]


# -- character and length rules, for every string setting ---------------------------------

PASSWORD_LOGIN: dict[str, Any] = {"method": "password", "host": "db.example.com",
                                  "user": "u", "password": "p"}


@pytest.mark.parametrize(
    ("field", "value", "base", "fragments"),
    [
        ("database", "a\0b", {"workgroup": "wg1"}, ["database", "printable", "127 bytes"]),
        ("database", "a\nb", {"workgroup": "wg1"}, ["database", "printable"]),
        ("database", "d" * 128, {"workgroup": "wg1"}, ["database", "1 to 127 bytes"]),
        ("database", "é" * 64, {"workgroup": "wg1"}, ["database", "127 bytes"]),
        ("database", "a\u200bb", {"workgroup": "wg1"}, ["database", "printable"]),
        ("secret_id", "sécret", {}, ["secret_id", "ASCII", "2048"]),
        ("secret_id", "s" * 2049, {}, ["secret_id", "1 to 2048"]),
        ("secret_id", "app\nlogin", {}, ["secret_id", "ASCII"]),
        ("role_arn", "arn:aws:iam::123456789012:role/réle", {"workgroup": "wg1"},
         ["role_arn", "IAM role ARN"]),
        ("role_arn", "arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/x", {"workgroup": "wg1"},
         ["role_arn", "IAM role ARN"]),
        ("role_arn", "arn:aws:iam::123456789012:role/" + "r" * 2020, {"workgroup": "wg1"},
         ["role_arn", "2048"]),
        ("role_arn", "arn:aws:iam::123456789012:role/x\n", {"workgroup": "wg1"},
         ["role_arn", "IAM role ARN"]),
        ("host", "db.example.com\n", PASSWORD_LOGIN, ["host", "DNS name", "IP address"]),
        ("host", "db example.com", PASSWORD_LOGIN, ["host", "DNS name"]),
        ("host", "-db.example.com", PASSWORD_LOGIN, ["host", "DNS name"]),
        ("host", "dé.example.com", PASSWORD_LOGIN, ["host", "DNS name"]),
        ("host", "h" * 254, PASSWORD_LOGIN, ["host", "DNS name"]),
        ("user", "al\nice", PASSWORD_LOGIN, ["user", "printable", "127 bytes"]),
        ("user", "u" * 128, PASSWORD_LOGIN, ["user", "1 to 127 bytes"]),
        ("user", "ü" * 64, PASSWORD_LOGIN, ["user", "127 bytes"]),
        ("region", "eu-west-1\n", {"workgroup": "wg1"}, ["region", "host label"]),
        ("region", "eu west 1", {"workgroup": "wg1"}, ["region", "host label"]),
        ("region", "-eu-west-1", {"workgroup": "wg1"}, ["region", "host label"]),
        ("region", "1234", {"workgroup": "wg1"}, ["region", "host label"]),
        ("region", "ëu-west-1", {"workgroup": "wg1"}, ["region", "host label"]),
        ("region", "r" * 64, {"workgroup": "wg1"}, ["region", "63"]),
        ("profile", "dev\0", {"workgroup": "wg1"}, ["profile", "control character"]),
        ("custom_domain", "db.example.com\n", {}, ["custom_domain", "DNS name"]),
        ("port", "٥٤٣٩", PASSWORD_LOGIN, ["port", "1 to 65535"]),
    ],
)
def test_strings_are_checked_for_characters_and_length(
    field: str, value: str, base: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve({**base, field: value}, {})
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("password", ["pw\n", "p\0w", "\x1bpw", "pw\x7f"])
def test_a_password_with_a_control_character_is_refused_without_repeating_it(
    password: str,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve({**PASSWORD_LOGIN, "password": password}, {})
    assert "password" in str(info.value)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize("password", [12345678, b"hunter2", ["hunter2"]])
def test_a_password_of_the_wrong_type_is_not_repeated(password: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve({**PASSWORD_LOGIN, "password": password}, {})
    assert "password" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "12345678" not in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database", "sales data"),
        ("database", "é" * 63),
        ("database", "d" * 127),
        ("secret_id", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/login-AbCdEf"),
        ("secret_id", "s" * 2048),
        ("role_arn", "arn:aws-us-gov:iam::123456789012:role/path/to/etl+x=y,z.@-_"),
        ("host", "localhost"),
        ("host", "127.0.0.1"),
        ("host", "::1"),
        ("host", "db.example.com."),
        ("user", "IAMR:etl-role"),
        ("user", "u" * 127),
        ("region", "eu-west-1"),
        ("region", "us-gov-west-1"),
        ("profile", "prod admin"),
        ("password", "p@ss word:\\\"'"),
    ],
)
def test_values_within_the_rules_are_accepted(field: str, value: str) -> None:
    base = PASSWORD_LOGIN if field in {"host", "user", "password"} else {"workgroup": "wg1"}
    if field == "secret_id":
        base = {}
    options = resolve({**base, field: value}, {})
    assert getattr(options, field) == value


def test_environment_values_are_checked_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="RSAUTH_DATABASE"):
        resolve({"workgroup": "wg1"}, {"RSAUTH_DATABASE": "dev\n"})
    with pytest.raises(ConfigurationError, match="RSAUTH_SECRET_ID"):
        resolve({}, {"RSAUTH_SECRET_ID": "\u00e9"})


@pytest.mark.parametrize(
    ("explicit", "broker", "environ", "profile", "named"),
    [
        ("eu_west_1", None, {}, None, "region="),
        (None, "eu west", {}, None, "Broker(region=)"),
        (None, None, {"AWS_REGION": "eu-west-1\n"}, None, "AWS_REGION"),
        (None, None, {"AWS_DEFAULT_REGION": "ëu"}, None, "AWS_DEFAULT_REGION"),
        (None, None, {}, "bad/region", "profile"),
    ],
)
def test_a_malformed_region_is_a_configuration_error_naming_where_it_came_from(
    explicit: str | None, broker: str | None, environ: dict[str, str], profile: str | None,
    named: str,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_region(explicit, broker, environ, profile)
    assert named in str(info.value)
    assert "host label" in str(info.value)


# The rules is_workgroup_name and is_region_name implement with str methods, as regexes.
_WORKGROUP_RULE = re.compile(r"[a-z0-9-]{3,64}")
_REGION_RULE = re.compile(r"(?![0-9]+\Z)(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# ASCII and look-alikes: a dotless i, the Kelvin sign, a superscript two, an Arabic-Indic
# digit, a full-width hyphen, a newline.
_NAME_ALPHABET = "aAzZ09-_. \n\u0131\u212a\u00b2\u0663\uff0d"


@given(st.text(alphabet=_NAME_ALPHABET, max_size=70))
def test_name_checks_agree_with_their_regexes(value: str) -> None:
    assert is_workgroup_name(value) == bool(_WORKGROUP_RULE.fullmatch(value))
    assert is_region_name(value) == bool(_REGION_RULE.fullmatch(value))


@pytest.mark.parametrize(
    "value",
    ["", "a", "ab", "abc", "a" * 63, "a" * 64, "a" * 65, "-", "-a", "a-", "a-b", "123",
     "1a", "eu-west-1", "EU-WEST-1", "us-gov-west-1", "eu-west-1\n", "\u0131\u0131", "ab\u00b2"],
)
def test_name_checks_at_the_edges(value: str) -> None:
    assert is_workgroup_name(value) == bool(_WORKGROUP_RULE.fullmatch(value))
    assert is_region_name(value) == bool(_REGION_RULE.fullmatch(value))
