"""rsauth proxy against a direct connection, in the same run (``make bench``).

- round trip of ``select 1`` on an open session, proxied and direct (median);
- a 50 MB result set, proxied and direct;
- session setup through the proxy (warm cache) against a direct ``rsauth.connect``;
- 200 concurrent sessions x 100 queries through the proxy, with the proxy's CPU per byte.

Both sides use psycopg (libpq); direct is TLS verify-full to the sandbox's endpoint with
the brokered password, proxied is plaintext to the proxy (TLS from there on). Writes
``bench/results/proxy.json``. Nothing here asserts a timing.

    python bench/proxy.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

import rsauth
from rsauth.proxy import Proxy
from rsauth.sandbox import Sandbox

RESULTS = Path(__file__).resolve().parent / "results" / "proxy.json"
BIG = "select repeat('x', 1000) from generate_series(1, 50000)"  # about 50 MB of rows


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process (Linux /proc)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def round_trips(connection: psycopg.Connection[Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        connection.execute("select 1").fetchone()
        times.append(time.perf_counter() - began)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args(argv)
    trips, setups, bigs = (300, 20, 2) if args.quick else (3000, 100, 5)
    sessions, queries = (50, 20) if args.quick else (200, 100)
    results: dict[str, Any] = {}
    print("starting the sandbox ...", flush=True)
    with Sandbox() as sandbox:
        os.environ.update(sandbox.env)
        broker = rsauth.Broker()
        credentials = broker.credentials(workgroup=sandbox.workgroup)
        direct_info = (
            f"host={credentials.host} port={credentials.port} dbname=dev "
            f"user={credentials.user} sslmode=verify-full "
            f"sslrootcert={sandbox.env['SSL_CERT_FILE']}"
        )
        with Proxy(workgroup=sandbox.workgroup, broker=broker, port=0, drain=0) as proxy:
            proxied_info = f"host=127.0.0.1 port={proxy.port} dbname=dev user=me sslmode=disable"

            def direct() -> psycopg.Connection[Any]:
                return psycopg.connect(direct_info, password=credentials.password,
                                       autocommit=True)

            def proxied() -> psycopg.Connection[Any]:
                return psycopg.connect(proxied_info, autocommit=True)

            print("1/4 select 1 round trip ...", flush=True)
            with direct() as d, proxied() as p:
                round_trips(d, 50)
                round_trips(p, 50)
                d_times: list[float] = []
                p_times: list[float] = []
                for _ in range(10):  # alternate blocks, so drift hits both alike
                    d_times += round_trips(d, trips // 10)
                    p_times += round_trips(p, trips // 10)
            results["select1_direct_ms"] = statistics.median(d_times) * 1000
            results["select1_proxied_ms"] = statistics.median(p_times) * 1000

            print("2/4 50 MB result set ...", flush=True)
            d_big: list[float] = []
            p_big: list[float] = []
            size = 0
            with direct() as d, proxied() as p:
                for _ in range(bigs):
                    for connection, sink in ((d, d_big), (p, p_big)):
                        began = time.perf_counter()
                        rows = connection.execute(BIG).fetchall()
                        sink.append(time.perf_counter() - began)
                        size = sum(len(row[0]) for row in rows)
            results["big_result_bytes"] = size
            results["big_direct_s"] = statistics.median(d_big)
            results["big_proxied_s"] = statistics.median(p_big)

            print("3/4 session setup (warm cache) ...", flush=True)
            proxied().close()
            rsauth_times: list[float] = []
            proxy_times: list[float] = []
            libpq_times: list[float] = []
            for _ in range(setups):
                began = time.perf_counter()
                broker.connect(workgroup=sandbox.workgroup, application_name="bench").close()
                rsauth_times.append(time.perf_counter() - began)
                began = time.perf_counter()
                proxied().close()
                proxy_times.append(time.perf_counter() - began)
                began = time.perf_counter()
                direct().close()
                libpq_times.append(time.perf_counter() - began)
            results["setup_rsauth_connect_ms"] = statistics.median(rsauth_times) * 1000
            results["setup_proxied_ms"] = statistics.median(proxy_times) * 1000
            results["setup_direct_libpq_ms"] = statistics.median(libpq_times) * 1000

            print(f"4/4 {sessions} concurrent sessions x {queries} queries ...", flush=True)
            assert proxy._thread is not None
            assert proxy._thread.native_id is not None
            loop_thread = proxy._thread.native_id
            before = proxy.stats()
            cpu_before = thread_cpu(loop_thread)
            failures: list[BaseException] = []
            barrier = threading.Barrier(sessions, timeout=300)

            def session() -> None:
                try:
                    with proxied() as connection:
                        barrier.wait()
                        for _ in range(queries):
                            connection.execute("select current_user, 1").fetchone()
                except BaseException as exc:
                    failures.append(exc)
                    barrier.abort()

            began = time.perf_counter()
            threads = [threading.Thread(target=session) for _ in range(sessions)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - began
            cpu = thread_cpu(loop_thread) - cpu_before
            after = proxy.stats()
            relayed = (after["bytes_client_to_server"] - before["bytes_client_to_server"]
                       + after["bytes_server_to_client"] - before["bytes_server_to_client"])
            results["concurrent"] = {
                "sessions": sessions, "queries": queries, "failures": len(failures),
                "seconds": elapsed, "proxy_cpu_s": cpu, "bytes": relayed,
                "proxy_cpu_ns_per_byte": cpu / relayed * 1e9 if relayed else None,
                "proxy_cpu_us_per_query": cpu / (sessions * queries) * 1e6,
            }
        broker.close()
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "quick": args.quick,
                          "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    d, p = results["select1_direct_ms"], results["select1_proxied_ms"]
    print(f"select 1 round trip   direct {d:.3f} ms  proxied {p:.3f} ms  "
          f"({p / d:.2f}x, +{p - d:.3f} ms)")
    d, p = results["big_direct_s"], results["big_proxied_s"]
    print(f"50 MB result          direct {d:.3f} s   proxied {p:.3f} s   ({p / d:.2f}x)")
    r, p = results["setup_rsauth_connect_ms"], results["setup_proxied_ms"]
    print(f"session setup         rsauth.connect {r:.2f} ms  proxied {p:.2f} ms  "
          f"({p / r:.2f}x; libpq direct {results['setup_direct_libpq_ms']:.2f} ms)")
    c = results["concurrent"]
    print(f"{c['sessions']} x {c['queries']} concurrent  {c['failures']} failures, "
          f"{c['seconds']:.1f} s, proxy CPU {c['proxy_cpu_s']:.2f} s = "
          f"{c['proxy_cpu_us_per_query']:.1f} us/query, {c['proxy_cpu_ns_per_byte']:.0f} ns/byte")
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
