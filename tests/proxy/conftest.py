"""A proxy in front of the session's sandbox, started per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rsauth
from rsauth.proxy import Proxy, SessionRecord
from rsauth.sandbox import Sandbox

ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def broker(sandbox: Sandbox) -> Iterator[rsauth.Broker]:
    with rsauth.Broker() as made:
        yield made


@pytest.fixture
def records() -> list[SessionRecord]:
    return []


@pytest.fixture
def make_proxy(
    sandbox: Sandbox, broker: rsauth.Broker, records: list[SessionRecord]
) -> Iterator[ProxyFactory]:
    """Start a Proxy for the sandbox's workgroup (keywords override); all closed after the test."""
    started: list[Proxy] = []

    def make(**overrides: Any) -> Proxy:
        settings: dict[str, Any] = {
            "workgroup": sandbox.workgroup,
            "port": 0,
            "broker": broker,
            "on_session": records.append,
            "drain": 0.0,
        }
        settings.update(overrides)
        proxy = Proxy(**settings).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.close()


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> Proxy:
    return make_proxy()


@pytest.fixture
def trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> Callable[[Proxy], str]:
    """Make clients that read SSL_CERT_FILE (redshift_connector) trust ``proxy``'s local CA
    as well as the sandbox's; returns the bundle's path. Call after the proxy started (it
    read SSL_CERT_FILE for its own upstream TLS then)."""

    def trust_proxy(proxy: Proxy) -> str:
        assert proxy.ca_path is not None
        bundle = tmp_path / f"bundle-{proxy.port}.pem"
        bundle.write_bytes(
            Path(sandbox.env["SSL_CERT_FILE"]).read_bytes() + proxy.ca_path.read_bytes()
        )
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        return str(bundle)

    return trust_proxy
