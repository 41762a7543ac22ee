"""TLS is verified: untrusted certificates, wrong host names and plaintext servers are refused."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import trustme

import rsauth
from rsauth.sandbox import Sandbox

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@contextmanager
def fake_server(answer: bytes, tls: ssl.SSLContext | None) -> Iterator[int]:
    """A one-connection-at-a-time server on 127.0.0.1 that answers the SSLRequest.

    With ``tls``, it says ``S`` and completes the server side of the handshake
    (then hangs up); without, it says ``N`` (a plaintext-only server).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(5)
                try:
                    if client.recv(8) == SSL_REQUEST:
                        client.sendall(answer)
                        if tls is not None:
                            with tls.wrap_socket(client, server_side=True):
                                pass
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


def test_an_untrusted_certificate_is_refused(sandbox: Sandbox) -> None:
    stranger = trustme.CA()  # not the sandbox CA in SSL_CERT_FILE
    with fake_server(b"S", server_context(stranger, "localhost")) as port, \
            pytest.raises(rsauth.ConnectError, match="TLS") as caught:
        rsauth.connect(method="password", host="localhost", port=port, user="u",
                       password="p", database="dev")
    assert "certificate" in str(caught.value)


def test_a_certificate_for_another_host_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = trustme.CA()
    trusted.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    with fake_server(b"S", server_context(trusted, "other.example")) as port, \
            pytest.raises(rsauth.ConnectError, match="TLS"):
        rsauth.connect(method="password", host="localhost", port=port, user="u",
                       password="p", database="dev")


def test_a_plaintext_only_server_is_refused(sandbox: Sandbox) -> None:
    with fake_server(b"N", None) as port, pytest.raises(rsauth.ConnectError):
        rsauth.connect(method="password", host="localhost", port=port, user="u",
                       password="p", database="dev")


def _admin_login() -> tuple[str, str]:
    arn = boto3.client("redshift-serverless").get_namespace(namespaceName="default-namespace")[
        "namespace"
    ]["adminPasswordSecretArn"]
    document = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    )
    return document["username"], document["password"]


def test_weakening_sslmode_works_only_when_asked_and_warns(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = _admin_login()
    # The sandbox certificate names localhost; 127.0.0.1 is the wrong host name.
    with pytest.raises(rsauth.ConnectError):
        rsauth.connect(method="password", host="127.0.0.1", port=sandbox.port, user=user,
                       password=password, database="dev")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("rsauth")]
    with rsauth.connect(method="password", host="127.0.0.1", port=sandbox.port, user=user,
                        password=password, database="dev", sslmode="verify-ca") as connection:
        cursor = connection.cursor()
        cursor.execute("select current_user")
        row = cursor.fetchone()
        assert row is not None
        assert row[0] == user
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("rsauth")]
    assert any("verify-ca" in message for message in warnings)
