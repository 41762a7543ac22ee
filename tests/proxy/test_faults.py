"""What goes wrong reaches the client as an ErrorResponse, and the proxy goes on serving."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator

import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rsauth
from rsauth._pgwire import PROTOCOL_3_0, SSL_REQUEST, parse_error
from rsauth.proxy import Proxy
from rsauth.sandbox import Sandbox
from tests.proxy.conftest import ProxyFactory
from tests.proxy.helpers import error_of, login_raw, read_reply

# One attempt per AWS call, so a fault is the client's answer at once.
ONE_ATTEMPT = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2)


@pytest.fixture
def quick_broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker(botocore_config=ONE_ATTEMPT, sleep=lambda _: None) as made:
        yield made


def test_a_workgroup_that_does_not_exist_gets_an_error_naming_it(
    make_proxy: ProxyFactory, quick_broker: rsauth.Broker
) -> None:
    proxy = make_proxy(workgroup="no-such-workgroup", broker=quick_broker)
    fields = error_of(login_raw(("127.0.0.1", proxy.port)))
    assert fields["M"].startswith("rsauth proxy: no login for workgroup 'no-such-workgroup'")
    assert "not found" in fields["M"].lower() or "does not exist" in fields["M"].lower()
    assert fields["C"] == "08001"
    assert not proxy.ready
    # It still listens and answers the next client the same way.
    assert error_of(login_raw(("127.0.0.1", proxy.port)))["C"] == "08001"


def test_a_throttled_control_plane_is_named_and_others_are_served(
    make_proxy: ProxyFactory, quick_broker: rsauth.Broker, sandbox: Sandbox
) -> None:
    proxy = make_proxy(broker=quick_broker)
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"  # dev's login is cached now
    sandbox.throttle(count=1000, operation="GetCredentials")
    other = {"user": "me", "database": "postgres"}
    fields = error_of(login_raw(("127.0.0.1", proxy.port), other))
    assert fields["M"].startswith("rsauth proxy: no login for workgroup")
    assert "throttl" in fields["M"].lower()
    # Sessions whose login is cached are still served.
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"
    sandbox.reset()
    assert login_raw(("127.0.0.1", proxy.port), other)[-1][0] == b"Z"


def test_an_unavailable_control_plane_is_named(
    make_proxy: ProxyFactory, quick_broker: rsauth.Broker, sandbox: Sandbox
) -> None:
    proxy = make_proxy(broker=quick_broker)
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"
    sandbox.unavailable(120)
    try:
        fields = error_of(login_raw(("127.0.0.1", proxy.port), {"database": "postgres"}))
        assert fields["M"].startswith("rsauth proxy: no login for workgroup")
        assert fields["C"] == "08001"
        assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"
    finally:
        sandbox.available()


def test_an_unreachable_endpoint_is_08001(
    make_proxy: ProxyFactory, sandbox: Sandbox, broker: rsauth.Broker
) -> None:
    proxy = make_proxy()
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"
    sandbox.front_fault("refuse", count=100)
    fields = error_of(login_raw(("127.0.0.1", proxy.port)))
    assert fields["C"] == "08001"
    assert fields["M"].startswith(f"rsauth proxy: workgroup '{sandbox.workgroup}':")


# -- garbage, oversized and half-open clients --------------------------------------------

_CORPUS = {
    "protocol 0.0": (struct.pack("!ii", 8, 0), "0A000"),
    "an HTTP request": (b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n", "08P01"),
    "length below 8": (b"\x00\x00\x00\x02", "08P01"),
    "oversized startup": (struct.pack("!ii", 20_000, PROTOCOL_3_0) + b"x" * 4096, "08P01"),
    "not UTF-8": (struct.pack("!ii", 16, PROTOCOL_3_0) + b"\xff\xfe\0\xff\xfe\0\0\0", "08P01"),
}


@pytest.mark.parametrize("name", sorted(_CORPUS))
def test_garbage_gets_an_error_and_the_proxy_goes_on(proxy: Proxy, name: str) -> None:
    data, sqlstate = _CORPUS[name]
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(data)
        fields = error_of(read_reply(sock))
    assert fields["C"] == sqlstate
    assert fields["M"].startswith("rsauth proxy:")
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"


def test_a_half_open_client_is_answered_after_the_handshake_timeout(
    make_proxy: ProxyFactory,
) -> None:
    proxy = make_proxy(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(b"\x00\x00")  # half a length word, then nothing
        fields = error_of(read_reply(sock))
    assert fields["C"] == "08P01"
    assert "did not log in within 0.5 s" in fields["M"]
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"


def test_a_broken_tls_handshake_ends_the_connection(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(struct.pack("!ii", 8, SSL_REQUEST))
        assert sock.recv(1) == b"S"
        sock.sendall(b"this is not a TLS ClientHello" * 4)
        while sock.recv(4096):
            pass
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=96))
def test_random_bytes_never_hang_or_stop_the_proxy(proxy: Proxy, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            messages = read_reply(sock)
        except (ConnectionResetError, ssl.SSLError):
            messages = []
    for kind, body in messages:
        if kind == b"E":
            assert parse_error(body)["M"].startswith("rsauth proxy:")
    assert login_raw(("127.0.0.1", proxy.port))[-1][0] == b"Z"
