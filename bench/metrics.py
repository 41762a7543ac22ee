"""What rsauth's metrics cost on a warm cache hit: ``Broker.credentials()`` served from the
process tier, timed in three kinds of process against one sandbox:

- ``none``: the ``otel`` extra not installed (importing ``opentelemetry`` fails);
- ``api``: the API imported by the application, no meter provider set (the API's proxy
  meter; rsauth creates its instruments only once the API is imported, so a process
  where it is installed but never imported is the ``none`` case);
- ``sdk``: the SDK's ``MeterProvider`` with an in-memory reader, collected at the end.

The kinds alternate in every round, each round a fresh process, so drift on a shared
machine hits them alike; a kind's figure is the median, over its processes, of each
process's best batch. Prints a table and writes ``bench/results/metrics.json``.
Nothing here asserts a timing.

    python bench/metrics.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rsauth.sandbox import Sandbox

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.json"
KINDS = ("none", "api", "sdk")

# One process: a warm Broker, then batches of hits; prints the best batch's µs per hit (as
# timeit advises: slower batches measure the other processes on the machine, not this one),
# the median batch's, and the best batch's CPU time of this process per hit (time taken
# by other processes left out).
_PROCESS = """
import json, sys, time
kind, workgroup, hits, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "none":
    sys.modules["opentelemetry"] = None  # as if the extra were not installed
import rsauth
reader = None
if kind == "api":
    import opentelemetry.metrics  # noqa: F401 - the application's, without a provider
if kind == "sdk":
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
broker = rsauth.Broker()
broker.credentials(workgroup=workgroup)
per_hit, cpu_per_hit = [], []
for _ in range(batches):
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(hits):
        broker.credentials(workgroup=workgroup)
    cpu_per_hit.append((time.process_time() - cpu_started) / hits * 1e6)
    per_hit.append((time.perf_counter() - started) / hits * 1e6)
collect_ms = None
if reader is not None:
    started = time.perf_counter()
    reader.get_metrics_data()
    collect_ms = (time.perf_counter() - started) * 1e3
stats = broker.stats()
per_hit.sort()
print(json.dumps({"us": per_hit[0], "median_us": per_hit[len(per_hit) // 2],
                  "cpu_us": min(cpu_per_hit),
                  "collect_ms": collect_ms,
                  "hits": stats["cache.hits"]}))
"""


def one(kind: str, workgroup: str, hits: int, batches: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _PROCESS, kind, workgroup, str(hits), str(batches)],
        capture_output=True, text=True, check=True, timeout=600,
    )
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--rounds", type=int, help="processes per kind (default 7)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    hits, batches = (2_000, 3) if args.quick else (20_000, 7)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    print("starting the sandbox ...", flush=True)
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        for number in range(rounds):
            print(f"round {number + 1}/{rounds} ...", flush=True)
            for kind in KINDS:
                runs[kind].append(one(kind, sandbox.workgroup, hits, batches))
    medians = {kind: statistics.median(run["us"] for run in runs[kind]) for kind in KINDS}
    cpu = {kind: statistics.median(run["cpu_us"] for run in runs[kind]) for kind in KINDS}
    collects = [run["collect_ms"] for run in runs["sdk"] if run["collect_ms"] is not None]
    results = {
        "warm_hit_us": {kind: round(value, 3) for kind, value in medians.items()},
        "ratio_to_none": {kind: round(medians[kind] / medians["none"], 3) for kind in KINDS},
        "warm_hit_cpu_us": {kind: round(value, 3) for kind, value in cpu.items()},
        "cpu_ratio_to_none": {kind: round(cpu[kind] / cpu["none"], 3) for kind in KINDS},
        "sdk_collect_ms": round(statistics.median(collects), 3) if collects else None,
        "hits_per_process": hits * batches,
        "rounds": rounds,
        "runs": runs,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "quick": args.quick,
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'kind':<6} {'warm hit (µs)':>14} {'vs none':>8} {'CPU (µs)':>9} {'vs none':>8}")
    for kind in KINDS:
        print(f"{kind:<6} {medians[kind]:>14.2f} {medians[kind] / medians['none']:>8.3f} "
              f"{cpu[kind]:>9.2f} {cpu[kind] / cpu['none']:>8.3f}")
    if results["sdk_collect_ms"] is not None:
        print(f"one collection with the SDK: {results['sdk_collect_ms']} ms")
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
