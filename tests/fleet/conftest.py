"""Fleet mode against a real Redis server and the sandbox.

``redis-server`` comes from the system (``make test`` installs Debian's package
when it is missing and apt-get is there); without it these tests are skipped
with the reason. Each test that needs a store gets its own server on a free
loopback port, in a temporary directory, without persistence.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import register_secret
from tests.figures import FigureBook

# A fixed throwaway fleet key for the tests (32 bytes, base64); no log record may hold it.
FLEET_KEY = base64.b64encode(bytes(range(32))).decode()
register_secret(FLEET_KEY)
register_secret(bytes(range(32)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1: no persistence, its own temporary directory."""

    def __init__(self, binary: str, *, config: str = "") -> None:
        self.binary = binary
        self.config = config
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="rsauth-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.port = self.port or free_port()
        conf = self.workdir / "redis.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
            f"dir {self.workdir}\nloglevel warning\n{self.config}\n"
        )
        self.process = subprocess.Popen(
            [self.binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    answer = conn.recv(64)
                    if answer.startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip(
            "redis-server is not installed (make test installs Debian's redis-server "
            "package when apt-get is available; or install Redis or Valkey yourself)"
        )
    return found


@pytest.fixture
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fleet_env(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> RedisServer:
    """``RSAUTH_SHARED_CACHE_URL`` and the fleet key set for this test."""
    monkeypatch.setenv("RSAUTH_SHARED_CACHE_URL", redis_server.url)
    monkeypatch.setenv("RSAUTH_SHARED_CACHE_KEY", FLEET_KEY)
    return redis_server


@dataclass(frozen=True)
class FleetScale:
    soak: bool
    workers: int
    lifetime: float
    lifetimes: int


@pytest.fixture(scope="session")
def fleet_scale(request: pytest.FixtureRequest) -> FleetScale:
    if request.config.getoption("--soak"):
        return FleetScale(soak=True, workers=64, lifetime=10.0, lifetimes=5)
    return FleetScale(soak=False, workers=32, lifetime=4.0, lifetimes=3)


BOOK = FigureBook("fleet figures", "fleet.json")
figures = pytest.fixture(name="figures")(BOOK.record)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    BOOK.report(terminalreporter)


def entry_keys(server: RedisServer) -> list[bytes]:
    return sorted(server.client().keys("rsauth:v1:e:*"))


def lease_keys(server: RedisServer) -> list[bytes]:
    return sorted(server.client().keys("rsauth:v1:l:*"))


__all__ = ["FLEET_KEY", "RedisServer", "entry_keys", "free_port", "lease_keys"]
