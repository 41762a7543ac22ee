"""A fleet's cold start at scale: 1,000 workers of one identity against one Redis.

``make fleet-bench`` (and ``make bench``) runs this against a sandbox it starts,
with ``--latency`` seconds added to every AWS call. Each worker is a thread with
its own boto3 session, its own :class:`rsauth.RedisCache` and its own Broker;
``--processes`` processes of ``--threads`` threads each. A worker's "first
login" is its first credentials in hand, timed from the moment all are released
(its session and Broker are made after that, as a starting worker makes them);
every ``--connect-every``-th worker also opens a database connection.

Phases: the cold start with the shared tier, the same without it, then a
compressed steady hour (short credential lifetimes, workers leaving and new ones
joining). Figures per phase: GetCredentials and STS calls (the sandbox's own
count), Redis commands per worker (``INFO commandstats`` before and after),
p50/p99 of the time to first login and to first connection. Prints them and
writes ``bench/results/fleet_scale.json``. Nothing here asserts a timing.

    python bench/fleet_scale.py [--processes 16 --threads 64] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "fleet_scale.json"
FLEET_KEY = base64.b64encode(bytes(range(32))).decode()


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)


class Redis:
    """One throwaway ``redis-server`` on loopback, spoken to with redis-py."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (make parts installs it)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.workdir = tempfile.mkdtemp(prefix="rsauth-bench-redis-")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--maxclients", "20000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commands(self) -> dict[str, int]:
        """Calls per command so far (``INFO commandstats``)."""
        stats = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def cpu_seconds(pid: int | None) -> float:
    """CPU time a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one worker process: --threads workers ------------------------------------


def _shared(spec: dict[str, Any]) -> Any:
    import rsauth

    if not spec["url"]:
        return None
    shared = rsauth.RedisCache(spec["url"], fleet_key=FLEET_KEY, **spec["cache"])
    if spec["wait"] == "poll" and hasattr(shared, "_subscribe"):
        # Measuring the alternative: backoff with jitter, no subscription.
        shared._subscribe = False
    return shared


def _first_login(spec: dict[str, Any], index: int, go_at: float) -> dict[str, Any]:
    import boto3

    import rsauth

    result: dict[str, Any] = {"error": None}
    started = time.time()
    session = boto3.Session()
    shared = _shared(spec)
    broker = rsauth.Broker(session, shared_cache=shared)
    result["setup_s"] = time.time() - started
    try:
        broker.credentials(workgroup=spec["workgroup"])
        result["login_s"] = time.time() - go_at
        if index % spec["connect_every"] == 0:
            with broker.connect(workgroup=spec["workgroup"]) as connection:
                cursor = connection.cursor()
                cursor.execute("select 1")
                cursor.fetchone()
            result["connect_s"] = time.time() - go_at
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
    result["stats"] = broker.stats()
    broker.close()
    if shared is not None:
        shared.close()
    return result


def _steady(spec: dict[str, Any], index: int, stop_at: float) -> dict[str, Any]:
    """Workers come and go: each lives a random while, reading its credentials every
    ``poll`` s and, for the connecting ones, connecting every ``connect_period`` s."""
    import boto3

    import rsauth

    rng = random.Random(index)
    summary: dict[str, Any] = {"connects": 0, "failed": [], "logins": 0, "generations": 0}
    connecting = index % spec["connect_every"] == 0
    while time.time() < stop_at:
        leave_at = min(stop_at, time.time() + rng.uniform(*spec["life"]))
        shared = _shared(spec)
        broker = rsauth.Broker(boto3.Session(), shared_cache=shared)
        summary["generations"] += 1
        next_connect = time.time()
        while time.time() < leave_at:
            try:
                if connecting and time.time() >= next_connect:
                    next_connect = time.time() + spec["connect_period"]
                    with broker.connect(workgroup=spec["workgroup"]) as connection:
                        cursor = connection.cursor()
                        cursor.execute("select 1")
                        cursor.fetchone()
                    summary["connects"] += 1
                else:
                    broker.credentials(workgroup=spec["workgroup"])
                    summary["logins"] += 1
            except Exception as exc:
                summary["failed"].append(f"{type(exc).__name__}: {exc}"[:300])
            time.sleep(spec["poll"] * rng.uniform(0.5, 1.5))
        stats = broker.stats()
        summary["login_retries"] = summary.get("login_retries", 0) + stats["login.retries"]
        summary["refreshes"] = summary.get("refreshes", 0) + stats["cache.refreshes"]
        # Where the fetches came from: the shared tier's misses and its waits that ran out.
        for name in ("cache.shared.misses", "cache.shared.waits", "cache.shared.wait_timeouts"):
            summary[name] = summary.get(name, 0) + stats.get(name, 0)
        broker.close()
        if shared is not None:
            shared.close()
    return summary


def process_main(spec: dict[str, Any], ready: Any, go: Any, go_at: Any, results: Any) -> None:
    os.environ.update(spec["env"])
    import boto3  # noqa: F401 - imported before the clock starts, as a running app has it

    import rsauth  # noqa: F401

    outcome: list[dict[str, Any]] = []
    lock = threading.Lock()

    def thread(index: int) -> None:
        go.wait()
        if spec["phase"] == "steady":
            found = _steady(spec, index, go_at.value + spec["seconds"])
        else:
            found = _first_login(spec, index, go_at.value)
        with lock:
            outcome.append(found)

    base = spec["first_index"]
    threads = [
        threading.Thread(target=thread, args=(base + i,), daemon=True)
        for i in range(spec["threads"])
    ]
    for t in threads:
        t.start()
    # Read while every thread waits (idle): after go this thread might get the GIL late.
    cpu = time.process_time()
    ready.put(os.getpid())
    for t in threads:
        t.join()
    # What a worker costs its own CPU (here 64 of them share one GIL and two cores).
    spent = (time.process_time() - cpu) / spec["threads"]
    results.put([{**found, "cpu_s": spent} for found in outcome])


# -- the conductor ------------------------------------------------------------


def run_phase(
    ctx: Any, sandbox: Any, redis: Redis | None, args: argparse.Namespace, *, phase: str,
    cache: dict[str, Any] | None = None, seconds: float = 0.0,
) -> dict[str, Any]:
    ready, results = ctx.Queue(), ctx.Queue()
    go, go_at = ctx.Event(), ctx.Value("d", 0.0)
    spec_base = {
        "env": sandbox.env,
        "workgroup": sandbox.workgroup,
        "url": redis.url if redis is not None else None,
        "cache": cache or {},
        "phase": phase,
        "wait": args.wait,
        "threads": args.steady_threads if phase == "steady" else args.threads,
        "connect_every": args.connect_every,
        "seconds": seconds,
        "poll": 0.5,
        "connect_period": 3.0,
        "life": (seconds / 3, seconds),
    }
    processes = [
        ctx.Process(
            target=process_main,
            args=(
                {**spec_base, "first_index": p * spec_base["threads"]}, ready, go, go_at, results
            ),
        )
        for p in range(args.processes)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=300)
    before = redis.commands() if redis is not None else {}
    sandbox_cpu = cpu_seconds(sandbox.pid)
    sandbox.reset_calls()
    go_at.value = time.time()
    go.set()
    found: list[dict[str, Any]] = []
    for _ in processes:
        found += results.get(timeout=seconds + 600)
    elapsed = time.time() - go_at.value
    for process in processes:
        process.join(30)
    sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_cpu
    calls = sandbox.calls()
    after = redis.commands() if redis is not None else {}
    workers = args.processes * spec_base["threads"]
    commands = {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] - before.get(name, 0) and name not in ("info", "ping", "client|setinfo")
    }
    figures: dict[str, Any] = {
        "workers": workers,
        "elapsed_s": round(elapsed, 1),
        "get_credentials": calls.get("redshift-serverless.GetCredentials", 0),
        "get_workgroup": calls.get("redshift-serverless.GetWorkgroup", 0),
        "sts_calls": sum(n for name, n in calls.items() if name.startswith("sts.")),
        # The sandbox answers every AWS call from one Python process (one GIL).
        "sandbox_cpu_s": round(sandbox_cpu, 1),
    }
    if redis is not None:
        figures["redis_commands_per_worker"] = round(sum(commands.values()) / workers, 1)
        figures["redis_commands"] = dict(sorted(commands.items()))
    if phase == "steady":
        figures["workers"] = args.processes * spec_base["threads"]
        figures["lifetime_s"] = args.lifetime
        figures["lifetimes"] = round(seconds / args.lifetime, 1)
        figures["get_credentials_per_lifetime"] = round(
            figures["get_credentials"] / (seconds / args.lifetime), 2
        )
        figures["workers_started"] = sum(s["generations"] for s in found)
        figures["connects"] = sum(s["connects"] for s in found)
        figures["credential_reads"] = sum(s["logins"] for s in found)
        # Refused logins retried (a login that expired on the way to the database).
        figures["login_retries"] = sum(s.get("login_retries", 0) for s in found)
        figures["in_process_refreshes"] = sum(s.get("refreshes", 0) for s in found)
        for name in ("cache.shared.misses", "cache.shared.waits", "cache.shared.wait_timeouts"):
            figures[name] = sum(s.get(name, 0) for s in found)
        failed = [f for s in found for f in s["failed"]]
        figures["failed"] = len(failed)
        figures["failures_sample"] = failed[:5]
        return figures
    figures["cpu_per_worker_s"] = round(sum(r["cpu_s"] for r in found) / len(found), 3)
    errors = [r["error"] for r in found if r["error"]]
    logins = [r["login_s"] for r in found if "login_s" in r]
    connects = [r["connect_s"] for r in found if "connect_s" in r]
    setups = [r["setup_s"] for r in found]
    figures.update(
        {
            "failed": len(errors),
            "failures_sample": errors[:5],
            "first_login_p50_s": percentile(logins, 0.50),
            "first_login_p99_s": percentile(logins, 0.99),
            "first_login_max_s": percentile(logins, 1.0),
            "connects": len(connects),
            "first_connect_p50_s": percentile(connects, 0.50),
            "first_connect_p99_s": percentile(connects, 0.99),
            "session_and_broker_p50_s": percentile(setups, 0.50),
            "session_and_broker_p99_s": percentile(setups, 0.99),
        }
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.3, help="added to every AWS call")
    parser.add_argument("--connect-every", type=int, default=10,
                        help="every n-th worker also connects")
    parser.add_argument("--lifetime", type=float, default=12.0,
                        help="credential lifetime in the steady phase (s)")
    parser.add_argument("--lifetimes", type=int, default=6, help="steady phase length")
    parser.add_argument("--steady-threads", type=int, default=16,
                        help="workers per process in the steady phase")
    parser.add_argument("--phases", default="shared,alone,steady")
    parser.add_argument("--wait", choices=("subscribe", "poll"), default="subscribe",
                        help="how waiters wait for the lease holder")
    parser.add_argument("--quick", action="store_true", help="2 processes x 16 threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.processes, args.threads, args.steady_threads = 2, 16, 8

    from rsauth.sandbox import Sandbox

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["rsauth", "boto3", "redis", "redshift_connector"])
    phases = args.phases.split(",")
    report: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "processes": args.processes,
        "threads_per_process": args.threads,
        "aws_latency_s": args.latency,
        "connect_every": args.connect_every,
        "steady_threads_per_process": args.steady_threads,
        "wait": args.wait,
    }
    redis = Redis()
    try:
        with Sandbox() as sandbox:
            sandbox.latency(args.latency)
            for phase in phases:
                if phase == "shared":
                    redis.client.flushall()
                    figures = run_phase(ctx, sandbox, redis, args, phase="cold")
                elif phase == "alone":
                    figures = run_phase(ctx, sandbox, None, args, phase="cold")
                elif phase == "steady":
                    redis.client.flushall()
                    sandbox.set_credential_lifetime(args.lifetime)
                    figures = run_phase(
                        ctx, sandbox, redis, args, phase="steady",
                        seconds=args.lifetime * args.lifetimes,
                    )
                    sandbox.set_credential_lifetime(None)
                else:
                    sys.exit(f"--phases: unknown phase {phase!r} (shared, alone, steady)")
                report[phase] = figures
                print(f"{phase}: {json.dumps(figures, indent=1)}", flush=True)
    finally:
        redis.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
