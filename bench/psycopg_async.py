"""rsauth.psycopg against a plain psycopg.connect, and the asyncio API under a cold burst.

``make bench`` runs this after ``bench/run.py``, against a sandbox it starts:

1. warm connect (connect, ``select 1``, close): ``rsauth.psycopg.connect`` beside
   ``psycopg.connect`` with the same password and TLS settings, alternating;
2. a cold cache hit by N callers at once: threads calling ``credentials()``
   beside tasks awaiting ``credentials_async()``, and tasks opening psycopg
   connections with ``rsauth.psycopg.connect_async``;
3. the event loop's longest stall during a cold burst, measured by a watchdog
   task that asks to wake every millisecond and records how late it woke.

Prints a table and writes ``bench/results/psycopg_async.json``. Nothing here
asserts a timing.

    python bench/psycopg_async.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from run import Bench, percentile

import rsauth
import rsauth.psycopg
from rsauth.sandbox import Sandbox

RESULTS = Path(__file__).resolve().parent / "results" / "psycopg_async.json"

WARM_CONNECT_RATIO = 1.05
LOOP_STALL_MS = 50.0
COLD_GET_CREDENTIALS = 1


def select_one(connection: psycopg.Connection[Any]) -> None:
    with connection:
        connection.execute("select 1").fetchone()


class AsyncBench:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        # The admin secret's login, read as bench/run.py reads it.
        base = Bench(sandbox, quick=True)
        self.user, self.password = base.admin_user, base.admin_password
        self.results: dict[str, Any] = {}

    # -- 1. warm connect ----------------------------------------------------------------

    def warm_connect(self, rounds: int) -> None:
        broker = rsauth.Broker()
        ca_file = os.environ["SSL_CERT_FILE"]
        workgroup = self.sb.workgroup
        contenders: dict[str, Callable[[], psycopg.Connection[Any]]] = {
            "psycopg.connect, static password (floor)": lambda: psycopg.connect(
                host=self.sb.host, port=self.sb.port, dbname="dev", user=self.user,
                password=self.password, prepare_threshold=None, sslmode="verify-full",
                sslrootcert=ca_file),
            "rsauth.psycopg secret": lambda: rsauth.psycopg.connect(
                broker=broker, workgroup=workgroup, method="secret"),
            "rsauth.psycopg iam": lambda: rsauth.psycopg.connect(
                broker=broker, workgroup=workgroup),
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for connect in contenders.values():
            for _ in range(3):
                select_one(connect())
        names = list(contenders)
        for index in range(rounds):
            order = names[index % len(names):] + names[:index % len(names)]
            for name in order:
                start = time.perf_counter()
                select_one(contenders[name]())
                samples[name].append((time.perf_counter() - start) * 1000)
        own = self._own_cost(broker)
        broker.close()
        floor = statistics.median(samples["psycopg.connect, static password (floor)"])
        table = {}
        for name, values in samples.items():
            median = statistics.median(values)
            table[name] = {"median_ms": round(median, 2),
                           "p90_ms": round(percentile(values, 0.9), 2),
                           "max_ms": round(max(values), 2),
                           "ratio_to_floor": round(median / floor, 3)}
        self.results["warm_connect"] = {"rounds": rounds, "contenders": table,
                                        "rsauth_own_us": own}

    def _own_cost(self, broker: rsauth.Broker, calls: int = 2000) -> dict[str, float]:
        """rsauth's own cost per warm connect: the same call with psycopg's connect stubbed."""
        real = psycopg.Connection.connect
        psycopg.Connection.connect = classmethod(  # type: ignore[method-assign,assignment]
            lambda cls, *args, **kwargs: None)  # the driver's work left out
        try:
            out = {}
            for method in ("secret", "iam"):
                start = time.perf_counter()
                for _ in range(calls):
                    rsauth.psycopg.connect(broker=broker, workgroup=self.sb.workgroup,
                                           method=method)
                out[method] = round((time.perf_counter() - start) / calls * 1e6, 1)
            return out
        finally:
            psycopg.Connection.connect = real  # type: ignore[method-assign]

    # -- 2. cold bursts -------------------------------------------------------------------

    def bursts(self, callers: list[int], latencies: list[float], connections: int) -> None:
        # The machine's own noise: the watchdog beside a loop that does nothing for a second.
        _, idle = asyncio.run(watched([asyncio.sleep(1.0)]))
        self.results["idle_loop_stall_ms"] = round(idle * 1000, 1)
        rows = []
        for count in callers:
            for latency in latencies:
                rows.append(self._burst("threads: credentials()", count, latency))
                rows.append(self._burst("tasks: credentials_async()", count, latency))
        for latency in latencies:
            rows.append(self._burst("tasks: rsauth.psycopg.connect_async()", connections, latency))
        # The same number of tasks sleeping as long as the call takes, without rsauth: what
        # waking that many tasks costs the loop on this machine.
        rows.append(self._burst("tasks: asyncio.sleep(), no rsauth", callers[-1],
                                latencies[-1]))
        # A new Broker in a new process also builds its boto3 session and clients (botocore
        # parses its JSON models, holding the GIL) during the burst.
        rows.append(self._burst("tasks: credentials_async(), new Broker", callers[-1],
                                latencies[-1], warm_clients=False))
        self.results["cold_burst"] = rows

    def _burst(
        self, contender: str, count: int, latency: float, *, warm_clients: bool = True
    ) -> dict[str, Any]:
        self.sb.reset()
        broker = rsauth.Broker()
        workgroup = self.sb.workgroup
        if warm_clients:
            # The AWS clients made and the workgroup looked up; the login cache emptied.
            broker.credentials(workgroup=workgroup)
            broker.invalidate(method="iam")
            self.sb.reset()
        if latency:
            self.sb.latency(latency)
        failures: list[str] = []
        stall = gc_pause = 0.0
        # One sleep all "no rsauth" tasks await, as all rsauth tasks await one call.
        shared: dict[str, asyncio.Future[None]] = {}
        start = time.perf_counter()
        if contender.startswith("threads"):
            barrier = threading.Barrier(count)

            def worker() -> None:
                barrier.wait()
                try:
                    broker.credentials(workgroup=workgroup)
                except Exception as exc:  # counted, not raised: a figure of the run
                    failures.append(type(exc).__name__)

            threads = [threading.Thread(target=worker) for _ in range(count)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            async def one() -> None:
                if "no rsauth" in contender:
                    await shared["sleep"]
                elif "psycopg" in contender:
                    connection = await rsauth.psycopg.connect_async(
                        broker=broker, workgroup=workgroup)
                    async with connection:
                        await connection.execute("select 1")
                else:
                    await broker.credentials_async(workgroup=workgroup)

            async def burst() -> tuple[list[Any], float]:
                shared["sleep"] = asyncio.ensure_future(asyncio.sleep(max(latency, 0.001)))
                return await watched([one() for _ in range(count)])

            with GcPauses() as pauses:
                start = time.perf_counter()
                outcomes, stall = asyncio.run(burst())
            gc_pause = pauses.longest
            failures = [type(o).__name__ for o in outcomes if isinstance(o, BaseException)]
        wall = time.perf_counter() - start
        broker.close()
        calls = self.sb.calls()
        self.sb.reset()
        return {"contender": contender, "callers": count, "latency_ms": int(latency * 1000),
                "warm_clients": warm_clients,
                "GetCredentials": calls.get("redshift-serverless.GetCredentials", 0),
                "wall_s": round(wall, 2), "loop_stall_ms": round(stall * 1000, 1),
                "gc_pause_ms": round(gc_pause * 1000, 1),
                "failures": len(failures)}


class GcPauses:
    """The longest garbage-collector pause while installed (a pause stops every thread)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.collect()  # what earlier phases left behind is not this burst's (nor its wall time)
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)


async def watched(work: list[Coroutine[Any, Any, None]]) -> tuple[list[Any], float]:
    """Run ``work`` at once beside a watchdog; the outcomes and the loop's longest stall (s)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    longest = 0.0

    async def watchdog() -> None:
        nonlocal longest
        while not done.is_set():
            asked = loop.time()
            await asyncio.sleep(0.001)
            longest = max(longest, loop.time() - asked - 0.001)

    dog = asyncio.ensure_future(watchdog())
    await asyncio.sleep(0.01)  # the watchdog is ticking before the burst starts
    outcomes = await asyncio.gather(*work, return_exceptions=True)
    done.set()
    await dog
    return list(outcomes), longest


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    warm = results["warm_connect"]["contenders"]
    for name in ("rsauth.psycopg secret", "rsauth.psycopg iam"):
        ratio = warm[name]["ratio_to_floor"]
        out.append((f"warm connect, {name}: within 1.05x psycopg.connect", f"{ratio}x",
                    ratio <= WARM_CONNECT_RATIO))
    tasks = [row for row in results["cold_burst"] if row["contender"].startswith("tasks")]
    worst = max(row["GetCredentials"] for row in tasks)
    out.append(("cold burst: 1 GetCredentials for any number of tasks", f"max {worst}",
                worst == COLD_GET_CREDENTIALS))
    stall = max(row["loop_stall_ms"] for row in tasks
                if row["warm_clients"] and "no rsauth" not in row["contender"])
    out.append(("cold login cache: the loop's longest stall under 50 ms", f"{stall} ms",
                stall < LOOP_STALL_MS))
    return out


def print_report(results: dict[str, Any]) -> None:
    print("\n== warm connect through psycopg (connect, select 1, close) ==")
    print(f"{'contender':<42}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}{'x floor':>9}")
    for name, row in results["warm_connect"]["contenders"].items():
        print(f"{name:<42}{row['median_ms']:>10}{row['p90_ms']:>9}{row['max_ms']:>9}"
              f"{row['ratio_to_floor']:>9}")
    own = results["warm_connect"]["rsauth_own_us"]
    print(f"rsauth's own cost per connect (psycopg stubbed): {own['secret']} us (secret), "
          f"{own['iam']} us (iam)")
    print("\n== cold cache: callers at once ==")
    print(f"{'contender':<40}{'callers':>8}{'latency':>9}{'GetCreds':>9}{'wall s':>8}"
          f"{'stall ms':>9}{'gc ms':>7}{'failed':>7}")
    for row in results["cold_burst"]:
        tasks = row["contender"].startswith("tasks")
        stall = row["loop_stall_ms"] if tasks else "-"
        pause = row["gc_pause_ms"] if tasks else "-"
        print(f"{row['contender']:<40}{row['callers']:>8}{row['latency_ms']:>7}ms"
              f"{row['GetCredentials']:>9}{row['wall_s']:>8}{stall:>9}{pause:>7}"
              f"{row['failures']:>7}")
    print(f"an idle loop's longest stall on this machine: {results['idle_loop_stall_ms']} ms")
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
        bench = AsyncBench(sandbox)
        print("1/2 warm connect through psycopg ...", flush=True)
        bench.warm_connect(rounds)
        print("2/2 cold bursts ...", flush=True)
        bench.bursts([32, 1000] if args.quick else [32, 128, 1000],
                     [0.3] if args.quick else [0.0, 0.3, 2.0],
                     connections=16 if args.quick else 32)
    results = bench.results
    results["verdicts"] = verdicts(results)
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "quick": args.quick,
                          "psycopg": psycopg.__version__,
                          "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
