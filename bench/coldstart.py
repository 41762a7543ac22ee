"""Cold start: the first connect in a fresh process, beside redshift_connector's IAM path.

``make bench`` runs this against a sandbox it starts:

1. ``import rsauth`` beside ``import redshift_connector``, each in a fresh
   ``python -c`` process, alternating, and ``python -c pass`` for the
   interpreter's own start: the import statement as the process times it (the
   target) and the whole process (its start and teardown too);
2. a fresh process doing the import, the first connect and ``select 1``:
   ``rsauth.connect(workgroup=...)`` beside ``redshift_connector.connect(iam=True,
   is_serverless=True, ...)`` with the same settings, in pairs whose order
   alternates, with 0 ms and with 30 ms added to every AWS call by the sandbox;
3. a breakdown of rsauth's cold path: a fresh process that times its imports,
   the boto3 session, the AWS credentials, each client, each AWS call (start
   and end, so calls made side by side show as such) and the database connect.

Prints tables and writes ``bench/results/coldstart.json``, with the load
average the machine had: on a shared machine the ratios (contenders measured
side by side in the same run) and each child's CPU time (user + system, which
load barely moves) are the figures to read. Nothing here asserts a timing.

    python bench/coldstart.py [--quick] [--pairs N]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import rsauth
from rsauth.sandbox import Sandbox

RESULTS = Path(__file__).resolve().parent / "results" / "coldstart.json"

LATENCIES_MS = (0, 30)
COLD_RATIO = {0: 1.0, 30: 0.9}
IMPORT_GAP_MS = 10.0

RSAUTH_CONNECT = """\
import time
start = time.perf_counter()
import rsauth
imported = time.perf_counter()
connection = rsauth.connect(workgroup={workgroup!r})
connected = time.perf_counter()
cursor = connection.cursor()
cursor.execute("select 1")
cursor.fetchone()
connection.close()
done = time.perf_counter()
print(imported - start, connected - imported, done - connected)
"""

CONNECTOR_CONNECT = """\
import os, time
start = time.perf_counter()
import redshift_connector
imported = time.perf_counter()
connection = redshift_connector.connect(
    iam=True, is_serverless=True, serverless_work_group={workgroup!r}, database="dev",
    region={region!r}, access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], ssl=True, sslmode="verify-full")
connected = time.perf_counter()
cursor = connection.cursor()
cursor.execute("select 1")
cursor.fetchone()
connection.close()
done = time.perf_counter()
print(imported - start, connected - imported, done - connected)
"""

# rsauth's cold path, timed from the outside: each step is wrapped where it is defined
# (no hook in rsauth), and every span is printed as JSON (name, start ms, end ms, thread).
BREAKDOWN = """\
import json, threading, time
origin = time.perf_counter()
spans = []

def span(name, start, end=None):
    end = time.perf_counter() if end is None else end
    spans.append((name, round((start - origin) * 1000, 2), round((end - origin) * 1000, 2),
                  threading.current_thread().name))

def wrap(owner, attribute, name_of):
    original = getattr(owner, attribute)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            span(name_of(*args, **kwargs), start)
    setattr(owner, attribute, timed)

start = time.perf_counter()
import boto3
span("import boto3, botocore", start)
start = time.perf_counter()
import redshift_connector
span("import redshift_connector (on top)", start)
start = time.perf_counter()
import rsauth
span("import rsauth (on top)", start)

import boto3.session, botocore.client, botocore.session
wrap(boto3.session.Session, "__init__", lambda *a, **k: "boto3 session")
wrap(boto3.session.Session, "get_credentials", lambda *a, **k: "AWS credentials (environment)")
wrap(botocore.session.Session, "create_client",
     lambda self, service, *a, **k: f"client {{service}} (service model, endpoints)")
wrap(botocore.client.BaseClient, "_make_api_call",
     lambda self, operation, *a, **k: f"AWS call {{operation}}")
wrap(redshift_connector, "connect", lambda *a, **k: "database connect (TCP, TLS, login)")

start = time.perf_counter()
connection = rsauth.connect(workgroup={workgroup!r})
span("rsauth.connect, whole", start)
start = time.perf_counter()
cursor = connection.cursor()
cursor.execute("select 1")
cursor.fetchone()
connection.close()
span("select 1, close", start)
print(json.dumps(spans))
"""


class Run(NamedTuple):
    wall_ms: float
    cpu_ms: float  # the child's user + system time: what load on the machine barely moves
    out: str


def run_child(code: str, env: dict[str, str]) -> Run:
    """A fresh ``python -c code`` process: its wall and CPU milliseconds, what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True,
        timeout=300,
    )
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return Run(wall, cpu, done.stdout)


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 1), "min_ms": round(min(values), 1)}


class ColdStart:
    def __init__(self, sandbox: Sandbox, pairs: int, breakdowns: int) -> None:
        self.sb = sandbox
        self.pairs = pairs
        self.breakdowns = breakdowns
        # Bytecode as an installed package has it: a fresh process that compiled rsauth
        # from source on every start would measure the compiler.
        self.env = {**os.environ, **sandbox.env}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        compileall.compile_dir(Path(rsauth.__file__).parent, quiet=1)
        self.results: dict[str, Any] = {}

    def imports(self) -> None:
        # Each process also times its import statement itself: the import is what a user
        # waits for before their code runs; the whole process adds the interpreter's start
        # and its teardown of what was imported (reported beside it).
        timed = (
            "import time\n"
            "wall, cpu = time.perf_counter(), time.process_time()\n"
            "import {module}\n"
            "print(time.perf_counter() - wall, time.process_time() - cpu)\n"
        )
        scripts = {
            "rsauth": timed.format(module="rsauth"),
            "redshift_connector": timed.format(module="redshift_connector"),
        }
        walls: dict[str, list[float]] = {name: [] for name in scripts}
        cpus: dict[str, list[float]] = {name: [] for name in scripts}
        gaps, cpu_gaps, baseline = [], [], []
        inner: dict[str, list[float]] = {name: [] for name in scripts}
        inner_gaps, inner_cpu_gaps = [], []
        for index in range(self.pairs):
            order = list(scripts) if index % 2 == 0 else list(reversed(scripts))
            pair = {name: run_child(scripts[name], self.env) for name in order}
            for name, run in pair.items():
                walls[name].append(run.wall_ms)
                cpus[name].append(run.cpu_ms)
            gaps.append(pair["rsauth"].wall_ms - pair["redshift_connector"].wall_ms)
            cpu_gaps.append(pair["rsauth"].cpu_ms - pair["redshift_connector"].cpu_ms)
            statement = {
                name: [float(x) * 1000 for x in run.out.split()] for name, run in pair.items()
            }
            for name, (wall, _) in statement.items():
                inner[name].append(wall)
            inner_gaps.append(statement["rsauth"][0] - statement["redshift_connector"][0])
            inner_cpu_gaps.append(statement["rsauth"][1] - statement["redshift_connector"][1])
            baseline.append(run_child("pass", self.env).wall_ms)
        self.results["import"] = {
            "pairs": self.pairs,
            **{
                f"import {name}": {
                    **summary(walls[name]), "cpu_ms": round(statistics.median(cpus[name]), 1)
                }
                for name in scripts
            },
            "python -c pass": summary(baseline),
            "gap_ms": round(statistics.median(gaps), 1),
            "cpu_gap_ms": round(statistics.median(cpu_gaps), 1),
            "statement_ms": {name: round(statistics.median(v), 1) for name, v in inner.items()},
            "statement_gap_ms": round(statistics.median(inner_gaps), 1),
            "statement_cpu_gap_ms": round(statistics.median(inner_cpu_gaps), 1),
        }

    def first_connect(self) -> None:
        scripts = {
            "rsauth": RSAUTH_CONNECT.format(workgroup=self.sb.workgroup),
            "redshift_connector iam": CONNECTOR_CONNECT.format(
                workgroup=self.sb.workgroup, region=self.sb.region
            ),
        }
        for script in scripts.values():  # the file system's caches warm for both
            run_child(script, self.env)
        rows = []
        for latency in LATENCIES_MS:
            self.sb.reset()
            if latency:
                self.sb.latency(latency / 1000)
            walls: dict[str, list[float]] = {name: [] for name in scripts}
            cpus: dict[str, list[float]] = {name: [] for name in scripts}
            inside: dict[str, list[list[float]]] = {name: [] for name in scripts}
            ratios, cpu_ratios = [], []
            for index in range(self.pairs):
                order = list(scripts) if index % 2 == 0 else list(reversed(scripts))
                pair = {}
                for name in order:
                    run = pair[name] = run_child(scripts[name], self.env)
                    walls[name].append(run.wall_ms)
                    cpus[name].append(run.cpu_ms)
                    inside[name].append([float(part) * 1000 for part in run.out.split()])
                ratios.append(pair["rsauth"].wall_ms / pair["redshift_connector iam"].wall_ms)
                cpu_ratios.append(
                    pair["rsauth"].cpu_ms / pair["redshift_connector iam"].cpu_ms
                )
            row: dict[str, Any] = {"latency_ms": latency, "pairs": self.pairs}
            for name in scripts:
                phases = list(zip(*inside[name], strict=True))
                row[name] = {
                    **summary(walls[name]),
                    "cpu_ms": round(statistics.median(cpus[name]), 1),
                    "import_ms": round(statistics.median(phases[0]), 1),
                    "connect_ms": round(statistics.median(phases[1]), 1),
                    "select_ms": round(statistics.median(phases[2]), 1),
                }
            row["ratio"] = round(statistics.median(ratios), 3)
            row["cpu_ratio"] = round(statistics.median(cpu_ratios), 3)
            rows.append(row)
        self.sb.reset()
        self.results["first_connect"] = rows

    def breakdown(self) -> None:
        code = BREAKDOWN.format(workgroup=self.sb.workgroup)
        rows = []
        for latency in LATENCIES_MS:
            self.sb.reset()
            if latency:
                self.sb.latency(latency / 1000)
            runs: list[list[list[Any]]] = [
                json.loads(run_child(code, self.env).out) for _ in range(self.breakdowns)
            ]
            # The run whose whole connect is the median one, shown as it happened.
            runs.sort(key=lambda spans: next(s[2] - s[1] for s in spans if "whole" in s[0]))
            median_run = runs[len(runs) // 2]
            rows.append({
                "latency_ms": latency,
                "runs": self.breakdowns,
                "spans": [
                    {"step": name, "start_ms": start, "end_ms": end,
                     "ms": round(end - start, 2), "thread": thread}
                    for name, start, end, thread in sorted(median_run, key=lambda s: s[1])
                ],
            })
        self.sb.reset()
        self.results["breakdown"] = rows


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for row in results["first_connect"]:
        target = COLD_RATIO[row["latency_ms"]]
        out.append((
            f"cold first connect, {row['latency_ms']} ms AWS latency: <= {target}x "
            "redshift_connector's IAM path",
            f"{row['ratio']}x", row["ratio"] <= target,
        ))
    gap = results["import"]["statement_gap_ms"]
    out.append((f"import rsauth within {IMPORT_GAP_MS:g} ms of import redshift_connector",
                f"{gap:+} ms", gap <= IMPORT_GAP_MS))
    return out


def print_report(results: dict[str, Any]) -> None:
    imports = results["import"]
    print(f"\n== imports in a fresh process, median of {imports['pairs']} pairs ==")
    print(f"{'':<34}{'wall ms':>10}{'CPU ms':>10}")
    for name in ("import rsauth", "import redshift_connector", "python -c pass"):
        cpu = imports[name].get("cpu_ms", "")
        print(f"{name:<34}{imports[name]['median_ms']:>10}{cpu:>10}")
    print(f"{'rsauth - redshift_connector':<34}{imports['gap_ms']:>+10}"
          f"{imports['cpu_gap_ms']:>+10}  (medians of the pairs' differences)")
    statement = imports["statement_ms"]
    print(f"the import statement alone, timed inside each process: rsauth "
          f"{statement['rsauth']} ms, redshift_connector {statement['redshift_connector']} ms, "
          f"difference {imports['statement_gap_ms']:+} ms wall, "
          f"{imports['statement_cpu_gap_ms']:+} ms CPU (medians of the pairs')")
    print("\n== cold start: fresh process, import + first connect + select 1 ==")
    print(f"{'AWS latency':<13}{'contender':<24}{'wall ms':>9}{'CPU ms':>8}{'import':>8}"
          f"{'connect':>9}{'select':>8}{'ratio':>7}{'CPU ratio':>10}")
    for row in results["first_connect"]:
        for name in ("rsauth", "redshift_connector iam"):
            part = row[name]
            ratios = f"{row['ratio']:>7}{row['cpu_ratio']:>10}" if name == "rsauth" else ""
            print(f"{row['latency_ms']:>5} ms     {name:<24}{part['median_ms']:>9}"
                  f"{part['cpu_ms']:>8}{part['import_ms']:>8}{part['connect_ms']:>9}"
                  f"{part['select_ms']:>8}{ratios}")
    print("(wall ms: the whole process; import, connect, select: inside it, wall; ratio: "
          "the median of the pairs' ratios)")
    for row in results["breakdown"]:
        print(f"\n== rsauth's cold path, {row['latency_ms']} ms AWS latency "
              f"(the median of {row['runs']} runs; ms from the script's first line) ==")
        for span in row["spans"]:
            print(f"  {span['start_ms']:>8.1f} -> {span['end_ms']:>8.1f}  {span['ms']:>7.1f} ms  "
                  f"{span['step']}  [{span['thread']}]")
    load = results["machine"]["loadavg"]
    print(f"\nload average (1, 5, 15 min): {load['before']} before, {load['after']} after")
    print("\n== targets ==")
    for what, figure, held in results["verdicts"]:
        print(f"  [{'held' if held else 'MISSED'}] {what}: {figure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 pairs, for a smoke run")
    parser.add_argument("--pairs", type=int, help="pairs per comparison (default 15)")
    args = parser.parse_args(argv)
    pairs = args.pairs or (5 if args.quick else 15)
    load_before = os.getloadavg()
    print("starting the sandbox ...", flush=True)
    with Sandbox() as sandbox:
        bench = ColdStart(sandbox, pairs, breakdowns=3 if args.quick else 7)
        print("1/3 imports ...", flush=True)
        bench.imports()
        print("2/3 first connect ...", flush=True)
        bench.first_connect()
        print("3/3 breakdown ...", flush=True)
        bench.breakdown()
    results = bench.results
    results["verdicts"] = verdicts(results)
    results["machine"] = {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "platform": platform.platform(), "quick": args.quick,
        "loadavg": {"before": [round(value, 2) for value in load_before],
                    "after": [round(value, 2) for value in os.getloadavg()]},
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
