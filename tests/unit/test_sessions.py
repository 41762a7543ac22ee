"""Sessions and clients: made once, counted, and role sessions through botocore's refresher."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import boto3
import pytest

from rsauth import ConfigurationError
from rsauth._sessions import DB_ROLES_TAG, SessionKey, Sessions
from tests._iam import trust

ROLE = "arn:aws:iam::123456789012:role/RedshiftAdmin"


def keyed_session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="AKIDUNITTEST", aws_secret_access_key="secret-value")


def test_one_client_per_service_per_session() -> None:
    sessions = Sessions(keyed_session())
    east = SessionKey(None, "us-east-1", None, ())
    west = SessionKey(None, "us-west-2", None, ())
    client = sessions.redshift_serverless(east)
    assert sessions.redshift_serverless(east) is client
    assert sessions.redshift_serverless(west) is not client
    assert sessions.redshift_serverless(west).meta.region_name == "us-west-2"
    assert sessions.secretsmanager(east) is sessions.secretsmanager(east)
    sessions.close()


def test_clients_use_botocores_standard_retry_mode() -> None:
    sessions = Sessions(keyed_session())
    client = sessions.redshift_serverless(SessionKey(None, "us-east-1", None, ()))
    config: Any = client.meta.config  # botocore sets Config options as dynamic attributes
    assert config.retries["mode"] == "standard"


def test_identity_is_the_access_key_id() -> None:
    assert Sessions(keyed_session()).identity(None) == "AKIDUNITTEST"


def test_no_credentials_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no AWS credentials"):
        Sessions(boto3.Session()).identity(None)


def test_unknown_profile_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="profile='nope'"):
        Sessions(None).profile_session("nope")


def test_role_session_uses_refreshable_assume_role_with_db_roles_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moto = pytest.importorskip("moto")
    captured: list[dict[str, Any]] = []
    original = Sessions._new_client

    def spy(self: Sessions, session: Any, service: str, region: str, **kwargs: Any) -> Any:
        client = original(self, session, service, region, **kwargs)
        client.meta.events.register(
            "provide-client-params.sts.AssumeRole",
            lambda params, **_: captured.append(dict(params)),
        )
        return client

    monkeypatch.setattr(Sessions, "_new_client", spy)
    calls: list[str] = []
    with moto.mock_aws():
        boto3.client("iam", region_name="us-east-1").create_role(
            RoleName="RedshiftAdmin", AssumeRolePolicyDocument=trust()
        )
        sessions = Sessions(keyed_session(), on_call=calls.append)
        key = SessionKey(None, "us-east-1", ROLE, ("analyst", "etl"))
        session = sessions.session(key)
        assert sessions.session(key) is session
        credentials = session.get_credentials()
        assert credentials is not None
        assert credentials.method == "rsauth-assume-role"
        assert captured == []  # deferred: nothing assumed until first use
        arn = sessions.sts(key).get_caller_identity()["Arn"]
        assert "assumed-role/RedshiftAdmin" in arn
        sessions.sts(key).get_caller_identity()
    assert len(captured) == 1
    assert captured[0]["RoleArn"] == ROLE
    assert captured[0]["Tags"] == [{"Key": DB_ROLES_TAG, "Value": "analyst:etl"}]
    assert calls.count("sts.AssumeRole") == 1
    assert calls.count("sts.GetCallerIdentity") == 2


# Registered before rsauth is imported, so it runs after rsauth's own exit handler (atexit
# runs handlers last in, first out): it sees what rsauth left for the interpreter's teardown.
_EXIT_CHECK = """
import atexit, gc, weakref

def check():
    gc.collect()
    print("client", "alive" if client_ref() is not None else "released")
    print("session", "alive" if session_ref() is not None else "released")
    print("usable", sessions.redshift_serverless(key).meta.region_name)

atexit.register(check)

import boto3
from rsauth._sessions import SessionKey, Sessions

sessions = Sessions(None)
key = SessionKey(None, "us-east-1", None, ())
client = sessions.redshift_serverless(key)
client_ref = weakref.ref(client)
session_ref = weakref.ref(sessions.profile_session(None))
del client
"""


def test_sessions_and_clients_are_released_before_the_interpreter_tears_down() -> None:
    # A boto3 session's parsed endpoint and model data, still alive at teardown, is walked
    # by each of its garbage collections; released at exit, it is freed before them.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDUNITTEST", "AWS_SECRET_ACCESS_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", _EXIT_CHECK], env=env, capture_output=True, text=True,
        check=True, timeout=120,
    )
    assert result.stdout.split("\n")[:3] == [
        "client released",
        "session released",
        "usable us-east-1",
    ], result.stderr
