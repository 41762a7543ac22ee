"""rsauth against redshift_connector's own IAM path and the static-password floor.

``make bench`` runs this against a sandbox it starts. Contenders alternate in
every round so drift on a shared machine hits them alike. Prints a table and
writes ``bench/results/latest.json``. Nothing here asserts a timing.

    python bench/run.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import redshift_connector

import rsauth
from rsauth._cache import Lease, RefreshCache
from rsauth.sandbox import Sandbox

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
Connect = Callable[[], Any]

WARM_CONNECT_RATIO = 1.05
CALLS_PER_1000 = {"redshift-serverless.GetCredentials": 1, "redshift-serverless.GetWorkgroup": 1}
COLD_GET_CREDENTIALS = 1
CACHE_HIT_US = 5.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def select_one(connect: Connect) -> None:
    connection = connect()
    try:
        cursor = connection.cursor()
        cursor.execute("select 1")
        cursor.fetchone()
        cursor.close()
    finally:
        connection.close()


class Bench:
    def __init__(self, sandbox: Sandbox, quick: bool) -> None:
        self.sb = sandbox
        self.quick = quick
        self.env = sandbox.env
        self.results: dict[str, Any] = {}
        arn = boto3.client("redshift-serverless").get_namespace(
            namespaceName=sandbox.namespace)["namespace"]["adminPasswordSecretArn"]
        document = json.loads(
            boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
        self.admin_user, self.admin_password = document["username"], document["password"]

    # -- contenders ---------------------------------------------------------------------

    def floor(self) -> Any:
        return redshift_connector.connect(
            host=self.sb.host, port=self.sb.port, database="dev", user=self.admin_user,
            password=self.admin_password, ssl=True, sslmode="verify-full")

    def floor_named(self) -> Any:
        # Naming the application spares the driver its inspect.stack() (about 1 ms), as
        # rsauth does for every connection it opens.
        return redshift_connector.connect(
            host=self.sb.host, port=self.sb.port, database="dev", user=self.admin_user,
            password=self.admin_password, ssl=True, sslmode="verify-full",
            application_name="bench")

    def connector_iam(self, with_host: bool) -> Connect:
        extra: dict[str, Any] = {"host": self.sb.host, "port": self.sb.port} if with_host else {}

        def connect() -> Any:
            return redshift_connector.connect(
                iam=True, is_serverless=True, serverless_work_group=self.sb.workgroup,
                database="dev", region=self.sb.region,
                access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                ssl=True, sslmode="verify-full", **extra)

        return connect

    # -- 1. warm connect ---------------------------------------------------------------

    def warm_connect(self, rounds: int) -> None:
        broker = rsauth.Broker()
        contenders: dict[str, Connect] = {
            "static password (floor)": self.floor,
            "static password, application_name": self.floor_named,
            "rsauth iam": lambda: broker.connect(workgroup=self.sb.workgroup),
            "rsauth secret": lambda: broker.connect(workgroup=self.sb.workgroup,
                                                    method="secret"),
            "redshift_connector iam, no host": self.connector_iam(with_host=False),
            "redshift_connector iam, host": self.connector_iam(with_host=True),
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for connect in contenders.values():
            for _ in range(3):
                select_one(connect)
        names = list(contenders)
        for index in range(rounds):
            order = names[index % len(names):] + names[:index % len(names)]
            for name in order:
                start = time.perf_counter()
                select_one(contenders[name])
                samples[name].append((time.perf_counter() - start) * 1000)
        broker.close()
        floor = statistics.median(samples["static password (floor)"])
        table = {}
        for name, values in samples.items():
            median = statistics.median(values)
            table[name] = {"median_ms": round(median, 2),
                           "p90_ms": round(percentile(values, 0.9), 2),
                           "max_ms": round(max(values), 2),
                           "ratio_to_floor": round(median / floor, 3)}
        self.results["warm_connect"] = {"rounds": rounds, "contenders": table}

    # -- 2. AWS calls per 1,000 connects --------------------------------------------------

    def aws_calls(self, connects: int) -> None:
        out: dict[str, Any] = {"connects": connects}
        broker = rsauth.Broker()
        self.sb.reset_calls()
        for _ in range(connects):
            select_one(lambda: broker.connect(workgroup=self.sb.workgroup))
        out["rsauth iam"] = self.sb.calls()
        broker.close()
        self.sb.reset_calls()
        forget_connector_cache()
        connect = self.connector_iam(with_host=False)
        for _ in range(connects):
            select_one(connect)
        out["redshift_connector iam, no host"] = self.sb.calls()
        self.results["aws_calls"] = out

    # -- 3. cold start under concurrency ------------------------------------------------

    def cold_start(self, thread_counts: list[int], latencies: list[float]) -> None:
        rows = []
        for threads in thread_counts:
            for latency in latencies:
                for contender in ("rsauth iam", "redshift_connector iam, no host"):
                    rows.append(self._stampede(contender, threads, latency))
        self.results["cold_start"] = rows

    def _stampede(self, contender: str, threads: int, latency: float) -> dict[str, Any]:
        self.sb.reset()
        if latency:
            self.sb.latency(latency)
        broker = rsauth.Broker()
        forget_connector_cache()
        if contender == "rsauth iam":
            connect: Connect = lambda: broker.connect(workgroup=self.sb.workgroup)  # noqa: E731
        else:
            connect = self.connector_iam(with_host=False)
        failures: list[str] = []
        barrier = threading.Barrier(threads)

        def worker() -> None:
            barrier.wait()
            try:
                select_one(connect)
            except Exception as exc:  # counted, not raised: a figure of the run
                failures.append(type(exc).__name__)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        start = time.perf_counter()
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        wall = time.perf_counter() - start
        broker.close()
        calls = self.sb.calls()
        self.sb.reset()
        return {"contender": contender, "threads": threads, "latency_ms": int(latency * 1000),
                "GetCredentials": calls.get("redshift-serverless.GetCredentials", 0),
                "GetWorkgroup": calls.get("redshift-serverless.GetWorkgroup", 0),
                "wall_s": round(wall, 2), "failures": len(failures)}

    # -- 4. first connect in a fresh process ----------------------------------------------

    def first_connect(self, repeats: int) -> None:
        scripts = {
            "rsauth iam": (
                "import rsauth; c = rsauth.connect(workgroup={wg!r}); "
                "c.cursor().execute('select 1'); c.close()"
            ),
            "redshift_connector iam, no host": (
                "import redshift_connector as r; c = r.connect(iam=True, is_serverless=True, "
                "serverless_work_group={wg!r}, database='dev', region='us-east-1', "
                "ssl=True, sslmode='verify-full'); c.cursor().execute('select 1'); c.close()"
            ),
        }
        env = {**os.environ, **self.env}
        out: dict[str, Any] = {}
        samples: dict[str, list[float]] = {name: [] for name in scripts}
        for _ in range(repeats):
            for name, script in scripts.items():
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", script.format(wg=self.sb.workgroup)],
                               env=env, check=True, capture_output=True, timeout=120)
                samples[name].append((time.perf_counter() - start) * 1000)
        for name, values in samples.items():
            out[name] = {"median_ms": round(statistics.median(values), 1),
                         "min_ms": round(min(values), 1)}
        out["python -c pass"] = {"median_ms": round(statistics.median(
            [_time_process([sys.executable, "-c", "pass"]) for _ in range(repeats)]), 1)}
        self.results["first_connect"] = {"repeats": repeats, **out}

    # -- 5. cache hit and memory --------------------------------------------------------

    def cache(self, calls: int, keys: int) -> None:
        broker = rsauth.Broker()
        broker.credentials(workgroup=self.sb.workgroup)
        for _ in range(1000):
            broker.credentials(workgroup=self.sb.workgroup)
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            broker.credentials(workgroup=self.sb.workgroup)
        per_call = (time.perf_counter() - start) / calls * 1e6

        # rsauth's own cost per connect: the same call with the driver stubbed out.
        class Stub:
            def close(self) -> None:
                pass

        real_connect = redshift_connector.connect
        redshift_connector.connect = lambda **kwargs: Stub()  # type: ignore[assignment]
        try:
            start = time.perf_counter()
            for _ in range(calls):
                broker.connect(workgroup=self.sb.workgroup).close()
            own = (time.perf_counter() - start) / calls * 1e6
        finally:
            redshift_connector.connect = real_connect
        broker.close()

        now = datetime.now(timezone.utc)
        cache: RefreshCache[tuple[str, int], str] = RefreshCache(
            "bench", clock=lambda: now, maxsize=1024)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for index in range(keys):
            cache.get(("key", index), lambda: Lease("value", lifetime=900.0))
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        self.results["cache"] = {
            "get_credentials_hit_us": round(per_call, 2), "calls": calls,
            "connect_overhead_us": round(own, 1),
            "distinct_keys": keys, "entries_kept": len(cache),
            "maxsize": 1024, "memory_kib": round((after - before) / 1024, 1),
        }


def forget_connector_cache() -> None:
    """redshift_connector keeps IAM logins in a process-wide dict: start its path cold too."""
    from redshift_connector.iam_helper import IamHelper

    IamHelper.credentials_cache.clear()


def _time_process(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return (time.perf_counter() - start) * 1000


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    warm = results["warm_connect"]["contenders"]
    named = warm["static password, application_name"]["median_ms"]
    for name in ("rsauth iam", "rsauth secret"):
        ratio = warm[name]["ratio_to_floor"]
        out.append((f"warm connect, {name}: within 1.05x the floor", f"{ratio}x",
                    ratio <= WARM_CONNECT_RATIO))
        strict = round(warm[name]["median_ms"] / named, 3)
        out.append((f"warm connect, {name}: within 1.05x the floor with application_name",
                    f"{strict}x", strict <= WARM_CONNECT_RATIO))
    calls = results["aws_calls"]["rsauth iam"]
    per = {k: calls.get(k, 0) for k in CALLS_PER_1000}
    out.append((f"AWS calls per {results['aws_calls']['connects']} connects: 1 + 1",
                str(per), per == CALLS_PER_1000))
    cold = [row for row in results["cold_start"] if row["contender"] == "rsauth iam"]
    worst = max(row["GetCredentials"] for row in cold)
    out.append(("cold start: 1 GetCredentials at any threads and latency",
                f"max {worst}", worst == COLD_GET_CREDENTIALS))
    hit = results["cache"]["get_credentials_hit_us"]
    out.append((f"cache hit under {CACHE_HIT_US:g} us", f"{hit} us", hit < CACHE_HIT_US))
    kept = results["cache"]["entries_kept"]
    out.append(("memory bounded by the cache size",
                f"{kept} entries of {results['cache']['distinct_keys']} keys",
                kept <= results["cache"]["maxsize"]))
    return out


def print_report(results: dict[str, Any]) -> None:
    print("\n== warm connect (connect, select 1, close) ==")
    print(f"{'contender':<34}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}{'x floor':>9}")
    for name, row in results["warm_connect"]["contenders"].items():
        print(f"{name:<34}{row['median_ms']:>10}{row['p90_ms']:>9}{row['max_ms']:>9}"
              f"{row['ratio_to_floor']:>9}")
    print(f"\n== AWS calls for {results['aws_calls']['connects']} sequential connects ==")
    for name in ("rsauth iam", "redshift_connector iam, no host"):
        print(f"{name:<34}{results['aws_calls'][name]}")
    print("\n== cold start: threads connecting at once ==")
    print(f"{'contender':<34}{'threads':>8}{'latency':>9}{'GetCreds':>9}{'GetWG':>7}"
          f"{'wall s':>8}{'failed':>7}")
    for row in results["cold_start"]:
        print(f"{row['contender']:<34}{row['threads']:>8}{row['latency_ms']:>7}ms"
              f"{row['GetCredentials']:>9}{row['GetWorkgroup']:>7}{row['wall_s']:>8}"
              f"{row['failures']:>7}")
    print("\n== first connect in a fresh process (import + connect) ==")
    for name, row in results["first_connect"].items():
        if isinstance(row, dict):
            print(f"{name:<34}{row['median_ms']:>10} ms")
    cache = results["cache"]
    print("\n== cache ==")
    print(f"get_credentials() cache hit: {cache['get_credentials_hit_us']} us per call")
    print(f"rsauth's own cost per connect (driver stubbed): {cache['connect_overhead_us']} us")
    print(f"{cache['distinct_keys']} distinct keys -> {cache['entries_kept']} entries kept, "
          f"{cache['memory_kib']} KiB")
    print("\n== targets ==")
    for what, figure, held in results["verdicts"]:
        print(f"  [{'held' if held else 'MISSED'}] {what}: {figure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--rounds", type=int, help="warm-connect rounds (default 300)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (30 if args.quick else 300)
    print("starting the sandbox ...", flush=True)
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        bench = Bench(sandbox, args.quick)
        print("1/5 warm connect ...", flush=True)
        bench.warm_connect(rounds)
        print("2/5 AWS calls ...", flush=True)
        bench.aws_calls(100 if args.quick else 1000)
        print("3/5 cold start ...", flush=True)
        bench.cold_start([32] if args.quick else [32, 128],
                         [0.0, 0.3] if args.quick else [0.0, 0.3, 2.0])
        print("4/5 first connect ...", flush=True)
        bench.first_connect(2 if args.quick else 5)
        print("5/5 cache ...", flush=True)
        bench.cache(2000 if args.quick else 20000, 10_000 if args.quick else 100_000)
    results = bench.results
    results["verdicts"] = verdicts(results)
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "quick": args.quick,
                          "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
