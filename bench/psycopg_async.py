"""rsauth.psycopg against a plain psycopg.connect, and the asyncio API under a cold burst.

``make bench`` runs this after ``bench/run.py``, against a sandbox it starts
(about a minute on a quiet 2-core machine):

1. warm connect (connect, ``select 1``, close): ``rsauth.psycopg.connect`` beside
   ``psycopg.connect`` with the same password and TLS settings, alternating;
2. a cold login cache hit by N callers at once: threads calling ``credentials()``
   beside tasks awaiting ``credentials_async()``, and tasks opening psycopg
   connections with ``rsauth.psycopg.connect_async``;
3. the event loop's longest stall during a cold burst of 1,000 tasks with 300 ms
   of AWS latency, measured by a watchdog task that asks to wake every
   millisecond and records how late it wakes, in pairs beside the same 1,000
   tasks awaiting one sleep without rsauth (the bare reference: what waking
   that many tasks costs the loop on this machine, at this load).

Prints a table and writes ``bench/results/psycopg_async.json``, with the load
average before and after (every duration grows with it). Nothing here
asserts a timing.

    python bench/psycopg_async.py [--quick] [--rounds N] [--pairs N]
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
TASKS = "tasks: credentials_async()"
BARE = "tasks: asyncio.sleep(), no rsauth (bare reference)"


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
        _, idle, _ = asyncio.run(watched([asyncio.sleep(1.0)]))
        self.results["idle_loop_stall_ms"] = round(idle * 1000, 1)
        rows = []
        for count in callers:
            for latency in latencies:
                rows.append(self._burst("threads: credentials()", count, latency))
                rows.append(self._burst(TASKS, count, latency))
        rows.append(self._burst("tasks: rsauth.psycopg.connect_async()", connections, 0.3))
        # A new Broker also starts its worker thread and builds its boto3 session and clients
        # (botocore parses its JSON models, holding the GIL) during the burst.
        rows.append(self._burst("tasks: credentials_async(), new Broker", callers[-1], 0.3,
                                warm=False))
        self.results["cold_burst"] = rows

    def stall(self, pairs: int, count: int = 1000, latency: float = 0.3) -> None:
        """The loop's longest stall in ``pairs`` cold bursts of ``count`` tasks, each beside
        the bare reference: the same tasks awaiting one sleep as long as the AWS call."""
        rows: dict[str, list[dict[str, Any]]] = {BARE: [], TASKS: []}
        for _ in range(pairs):
            for contender in (BARE, TASKS):
                rows[contender].append(self._burst(contender, count, latency))

        def figures(contender: str, figure: str) -> list[float]:
            return [row[figure] for row in rows[contender]]

        bare, ours = figures(BARE, "loop_stall_ms"), figures(TASKS, "loop_stall_ms")
        bare_cpu, our_cpu = figures(BARE, "loop_cpu_ms"), figures(TASKS, "loop_cpu_ms")
        self.results["loop_stall"] = {
            "tasks": count, "latency_ms": int(latency * 1000), "pairs": pairs,
            "bare_ms": bare, "rsauth_ms": ours,
            "GetCredentials": [int(n) for n in figures(TASKS, "GetCredentials")],
            "bare_median_ms": round(statistics.median(bare), 1),
            "rsauth_median_ms": round(statistics.median(ours), 1),
            "difference_median_ms": round(statistics.median(ours) - statistics.median(bare), 1),
            "bare_max_ms": max(bare), "rsauth_max_ms": max(ours),
            "bare_loop_cpu_median_ms": round(statistics.median(bare_cpu), 1),
            "rsauth_loop_cpu_median_ms": round(statistics.median(our_cpu), 1),
        }

    def _burst(
        self, contender: str, count: int, latency: float, *, warm: bool = True
    ) -> dict[str, Any]:
        self.sb.reset()
        broker = rsauth.Broker()
        workgroup = self.sb.workgroup
        if warm:
            # A broker that has served before: its AWS clients made, the workgroup looked
            # up, its worker thread started; then the login cache emptied.
            asyncio.run(broker.credentials_async(workgroup=workgroup))
            broker.invalidate(method="iam")
            self.sb.reset()
        if latency:
            self.sb.latency(latency)
        failures: list[str] = []
        stall = gc_pause = cpu = 0.0
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
                if contender == BARE:
                    await shared["sleep"]
                elif "psycopg" in contender:
                    connection = await rsauth.psycopg.connect_async(
                        broker=broker, workgroup=workgroup)
                    async with connection:
                        await connection.execute("select 1")
                else:
                    await broker.credentials_async(workgroup=workgroup)

            async def burst() -> tuple[list[Any], float, float]:
                shared["sleep"] = asyncio.ensure_future(asyncio.sleep(max(latency, 0.001)))
                return await watched([one() for _ in range(count)])

            with GcPauses() as pauses:
                start = time.perf_counter()
                outcomes, stall, cpu = asyncio.run(burst())
            gc_pause = pauses.longest
            failures = [type(o).__name__ for o in outcomes if isinstance(o, BaseException)]
        wall = time.perf_counter() - start
        broker.close()
        calls = self.sb.calls()
        self.sb.reset()
        return {"contender": contender, "callers": count, "latency_ms": int(latency * 1000),
                "warm": warm,
                "GetCredentials": calls.get("redshift-serverless.GetCredentials", 0),
                "wall_s": round(wall, 2), "loop_stall_ms": round(stall * 1000, 1),
                "loop_cpu_ms": round(cpu * 1000, 1),
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


async def watched(work: list[Coroutine[Any, Any, None]]) -> tuple[list[Any], float, float]:
    """Run ``work`` at once beside a watchdog: the outcomes, the loop's longest stall and
    the CPU time its thread spent meanwhile (s). The stall is wall time and grows with
    the machine's load; the CPU time is the loop's own work, much less so."""
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
    cpu = time.thread_time()
    outcomes = await asyncio.gather(*work, return_exceptions=True)
    cpu = time.thread_time() - cpu
    done.set()
    await dog
    return list(outcomes), longest, cpu


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    warm = results["warm_connect"]["contenders"]
    for name in ("rsauth.psycopg secret", "rsauth.psycopg iam"):
        ratio = warm[name]["ratio_to_floor"]
        out.append((f"warm connect, {name}: within 1.05x psycopg.connect", f"{ratio}x",
                    ratio <= WARM_CONNECT_RATIO))
    stall = results["loop_stall"]
    counts = [row["GetCredentials"] for row in results["cold_burst"]
              if row["contender"].startswith("tasks")] + stall["GetCredentials"]
    out.append(("cold burst: 1 GetCredentials for any number of tasks", f"max {max(counts)}",
                max(counts) == COLD_GET_CREDENTIALS))
    out.append((f"{stall['tasks']} tasks, cold login cache, {stall['latency_ms']} ms latency: "
                "the loop's longest stall under 50 ms (median of the bursts)",
                f"{stall['rsauth_median_ms']} ms (bare reference {stall['bare_median_ms']} ms)",
                stall["rsauth_median_ms"] < LOOP_STALL_MS))
    return out


def print_report(results: dict[str, Any]) -> None:
    load = results["machine"]["load_average"]
    print(f"\nload average (1, 5, 15 min): {load['before']} before, {load['after']} after "
          f"on {results['machine']['cpus']} CPUs: durations grow with it")
    print("\n== warm connect through psycopg (connect, select 1, close) ==")
    print(f"{'contender':<42}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}{'x floor':>9}")
    for name, row in results["warm_connect"]["contenders"].items():
        print(f"{name:<42}{row['median_ms']:>10}{row['p90_ms']:>9}{row['max_ms']:>9}"
              f"{row['ratio_to_floor']:>9}")
    own = results["warm_connect"]["rsauth_own_us"]
    print(f"rsauth's own cost per connect (psycopg stubbed): {own['secret']} us (secret), "
          f"{own['iam']} us (iam)")
    print("\n== cold login cache: callers at once ==")
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
    stall = results["loop_stall"]
    print(f"\n== the loop's longest stall: {stall['tasks']} tasks, cold login cache, "
          f"{stall['latency_ms']} ms AWS latency, {stall['pairs']} bursts each ==")
    print(f"{'':<34}{'median ms':>10}{'max ms':>9}  each burst (ms)")
    print(f"{'bare reference (no rsauth)':<34}{stall['bare_median_ms']:>10}"
          f"{stall['bare_max_ms']:>9}  {stall['bare_ms']}")
    print(f"{'rsauth credentials_async()':<34}{stall['rsauth_median_ms']:>10}"
          f"{stall['rsauth_max_ms']:>9}  {stall['rsauth_ms']}")
    print(f"{'difference (rsauth - bare)':<34}{stall['difference_median_ms']:>10}")
    print(f"the loop thread's CPU time per burst (median): "
          f"{stall['bare_loop_cpu_median_ms']} ms bare, "
          f"{stall['rsauth_loop_cpu_median_ms']} ms rsauth (load changes it much less)")
    print(f"GetCredentials per burst: {stall['GetCredentials']}")
    print("\n== targets ==")
    for what, figure, held in results["verdicts"]:
        print(f"  [{'held' if held else 'MISSED'}] {what}: {figure}")


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--rounds", type=int, help="warm-connect rounds (default 300)")
    parser.add_argument("--pairs", type=int, help="stall bursts, each beside the bare "
                        "reference (default 5)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (30 if args.quick else 300)
    pairs = args.pairs or (2 if args.quick else 5)
    before = load_average()
    print(f"load average {before}; starting the sandbox ...", flush=True)
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        bench = AsyncBench(sandbox)
        print("1/3 warm connect through psycopg ...", flush=True)
        bench.warm_connect(rounds)
        print("2/3 cold bursts ...", flush=True)
        bench.bursts([32, 1000], [0.0, 0.3], connections=16 if args.quick else 32)
        print("3/3 the loop's longest stall beside the bare reference ...", flush=True)
        bench.stall(pairs)
    results = bench.results
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "quick": args.quick,
                          "psycopg": psycopg.__version__,
                          "switch_interval_s": sys.getswitchinterval(),
                          "load_average": {"before": before, "after": load_average()},
                          "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    results["verdicts"] = verdicts(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
