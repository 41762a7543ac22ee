"""The sandbox starts, stops and cleans up after itself, however it ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
from pathlib import Path

import pytest

from rsauth.sandbox import Sandbox


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent and int(entry.name) not in found:
                found.add(int(entry.name))
                frontier.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_gone(pids: set[int], ports: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids) and not any(_port_open(p) for p in ports):
            return
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)], "processes left behind"
    assert not [port for port in ports if _port_open(port)], "ports left open"


def _ports(sb: Sandbox) -> list[int]:
    aws = int(sb.aws_url.rsplit(":", 1)[1])
    admin = urllib.parse.urlsplit(sb.admin_url).port
    assert admin is not None
    return [sb.port, aws, admin]


def test_stop_leaves_no_process_port_or_directory() -> None:
    sb = Sandbox().start()
    assert sb.pid is not None
    processes = {sb.pid, *_children(sb.pid)}
    assert len(processes) >= 2, "the sandbox runs PostgreSQL as a child"
    ports = _ports(sb)
    assert all(_port_open(port) for port in ports)
    workdir = Path(sb.env["SSL_CERT_FILE"]).parent
    assert workdir.is_dir()
    sb.stop()
    _wait_gone(processes, ports)
    assert not workdir.exists()


def test_exception_in_with_block_stops_everything() -> None:
    seen: dict[str, object] = {}

    def fail_inside() -> None:
        with Sandbox() as sb:
            assert sb.pid is not None
            seen["processes"] = {sb.pid, *_children(sb.pid)}
            seen["ports"] = _ports(sb)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    processes, ports = seen["processes"], seen["ports"]
    assert isinstance(processes, set)
    assert isinstance(ports, list)
    _wait_gone(processes, ports)


def test_a_killed_parent_takes_the_sandbox_with_it(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import json, sys, time, urllib.parse
        from rsauth.sandbox import Sandbox
        sb = Sandbox().start()
        admin = urllib.parse.urlsplit(sb.admin_url).port
        ports = [sb.port, int(sb.aws_url.rsplit(":", 1)[1]), admin]
        print(json.dumps({"pid": sb.pid, "ports": ports}), flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        import json

        facts = json.loads(parent.stdout.readline())
        processes = {facts["pid"], *_children(facts["pid"])}
        assert len(processes) >= 2
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    _wait_gone(processes, facts["ports"])


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_foreground_mode_prints_exports_and_stops_cleanly(stop_signal: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rsauth.sandbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        exports = [line for line in lines if line.startswith("export ")]
        names = {line.split("=", 1)[0].removeprefix("export ") for line in exports}
        assert {"AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS", "SSL_CERT_FILE", "AWS_REGION",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
        assert any("admin API: http://127.0.0.1:" in line for line in lines)
        processes = {process.pid, *_children(process.pid)}
        process.send_signal(stop_signal)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    _wait_gone(processes, [])


def test_foreground_help_explains_itself() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rsauth.sandbox", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert "Redshift Serverless" in out
    assert "--seed" in out
