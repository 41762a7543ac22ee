"""``rsauth proxy`` as a process: its first line, session lines, health endpoints, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rsauth.sandbox import Sandbox
from tests.proxy.helpers import wait_for

psycopg = pytest.importorskip("psycopg")

LISTENING = re.compile(r"^rsauth proxy: listening on 127\.0\.0\.1:(\d+)$")


class Running:
    """A ``python -m rsauth proxy`` child and the lines it printed so far."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rsauth", "proxy", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, pattern: str) -> str:
        wait_for(lambda: any(re.search(pattern, x) for x in self.lines), f"a line {pattern!r}")
        return next(x for x in self.lines if re.search(pattern, x))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)
        self._reader.join(10)


@pytest.fixture
def run(sandbox: Sandbox) -> Iterator[Callable[[list[str]], Running]]:
    started: list[Running] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start(args: list[str]) -> Running:
        child = Running(args, env)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


Run = Callable[[list[str]], Running]


def test_first_line_sessions_and_sigterm_drain(run: Run, sandbox: Sandbox) -> None:
    child = run(["--workgroup", sandbox.workgroup, "--port", "0", "--drain", "60"])
    wait_for(lambda: bool(child.lines), "the first line")
    first = LISTENING.match(child.lines[0])
    assert first, child.lines
    port = int(first.group(1))
    ca_line = child.line("local TLS CA certificate: ")
    ca_file = ca_line.split(": ", 2)[-1]
    assert Path(ca_file).is_file()
    info = (
        f"host=127.0.0.1 port={port} user=me dbname=dev "
        f"sslmode=verify-full sslrootcert={ca_file}"
    )
    open_session = psycopg.connect(info, autocommit=True)
    try:
        child.process.send_signal(signal.SIGTERM)
        child.line("stopping")
        # Draining: the open session keeps working, new connections are not accepted.
        assert open_session.execute("select current_user").fetchone() == ("IAM:sandbox-admin",)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(info, connect_timeout=5)
    finally:
        open_session.close()
    assert child.process.wait(timeout=60) == 0
    session = child.line(r"^rsauth proxy: session ")
    assert "as IAM:sandbox-admin database dev" in session
    assert re.search(r"\d+ bytes in, \d+ bytes out", session)
    assert child.lines[-1] == "rsauth proxy: stopped"
    assert not Path(ca_file).exists()


def test_health_endpoints(run: Run, sandbox: Sandbox) -> None:
    child = run(
        ["--workgroup", sandbox.workgroup, "--port", "0", "--http-port", "0", "--drain", "0"]
    )
    base = child.line(r"health and metrics on ").rsplit(" ", 1)[-1].rstrip("/")
    # S310: plain http to the proxy's own loopback endpoint.
    with urllib.request.urlopen(f"{base}/liveness", timeout=30) as answer:  # noqa: S310
        assert answer.status == 200

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/readiness", timeout=30) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
            return False

    wait_for(ready, "readiness")
    first = LISTENING.match(child.lines[0])
    assert first, child.lines
    port = int(first.group(1))
    with psycopg.connect(f"host=127.0.0.1 port={port} user=me dbname=dev sslmode=disable") as c:
        c.execute("select 1")
    child.line(r"^rsauth proxy: session ")
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as answer:  # noqa: S310
        metrics = answer.read().decode()
    label = f'workgroup="{sandbox.workgroup}"'
    assert f"rsauth_proxy_sessions_total{{{label}}} 1" in metrics
    assert f"rsauth_proxy_sessions_open{{{label}}} 0" in metrics
    assert f'rsauth_proxy_connect_seconds_bucket{{{label},le="+Inf"}} 1' in metrics
    assert re.search(rf"rsauth_proxy_bytes_server_to_client_total{{{label}}} [1-9]", metrics)


def test_two_workgroups_on_one_port_is_a_usage_error(sandbox: Sandbox) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rsauth", "proxy", "--workgroup", "a-b-c", "--workgroup", "d-e-f"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 2
    assert "give each further workgroup its own port" in done.stderr
