"""A fleet of worker processes on one real Redis server, against the sandbox.

Each worker is its own process (forked from a ``forkserver`` that has imported
rsauth already) with its own Broker and in-process cache. Lifetimes are
shortened in the sandbox so a run spans several of them in seconds. Figures go
to ``bench/results/fleet.json`` and the terminal summary; docs/fleet.md quotes
them. ``--soak`` runs a bigger fleet for longer.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rsauth.sandbox import Sandbox
from tests._iam import make_role
from tests.figures import Figures
from tests.fleet import _worker
from tests.fleet.conftest import FLEET_KEY, FleetScale, RedisServer, entry_keys, lease_keys

pytestmark = pytest.mark.slow

# Realistic GetCredentials latency, so a fetch saved is time saved.
GET_CREDENTIALS_LATENCY = 0.1


@pytest.fixture(scope="session")
def context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["rsauth", "boto3", "redshift_connector", "redis", "tests.fleet._worker"]
    )
    return ctx


class Fleet:
    """Worker processes started together, released together, summarised on a queue."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.ready = context.Queue()
        self.results = context.Queue()
        self.processes: list[Any] = []
        self.gates: list[Any] = []

    def start(self, specs: list[dict[str, Any]]) -> Any:
        """Start one worker per spec; returns their gate (an Event), once all are ready."""
        gate = self.context.Event()
        started = [
            self.context.Process(target=_worker.run, args=(spec, self.ready, gate, self.results))
            for spec in specs
        ]
        for process in started:
            process.start()
        for _ in started:
            self.ready.get(timeout=120)
        self.processes += started
        self.gates.append(gate)
        return gate

    def collect(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while len(found) < count:
            try:
                found.append(self.results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
        return found

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


@pytest.fixture
def fleet(context: Any) -> Iterator[Fleet]:
    made = Fleet(context)
    try:
        yield made
    finally:
        made.close()


def spec(
    sb: Sandbox,
    *,
    seconds: float,
    store: RedisServer | None,
    name: str = "",
    role_arn: str | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "env": dict(os.environ),
        "workgroup": sb.workgroup,
        "url": store.url if store is not None else None,
        "fleet_key": FLEET_KEY,
        "cache": cache or {},
        "seconds": seconds,
        "connect_every": 1.0,
        "poll_every": 0.1,
        "name": name,
        "role_arn": role_arn,
    }


def wait_for(condition: Callable[[], object], *, what: str, within: float = 120) -> None:
    """Wait for ``condition`` to hold; ``within`` only guards against a deadlock."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {within} s"
        time.sleep(0.01)


def get_credentials(sb: Sandbox) -> int:
    return sb.calls().get("redshift-serverless.GetCredentials", 0)


def assert_no_failures(summaries: list[dict[str, Any]], expected: int) -> None:
    assert len(summaries) == expected, f"{expected - len(summaries)} worker(s) gave no result"
    failed = {s["pid"]: s["errors"][:3] for s in summaries if s["errors"]}
    assert not failed, failed


@pytest.fixture
def short_lifetime(sandbox: Sandbox, fleet_scale: FleetScale) -> Iterator[float]:
    sandbox.set_credential_lifetime(fleet_scale.lifetime)
    sandbox.latency(GET_CREDENTIALS_LATENCY, operation="GetCredentials")
    yield fleet_scale.lifetime
    sandbox.set_credential_lifetime(None)


def test_one_fetch_per_lifetime_for_the_whole_fleet(
    sandbox: Sandbox,
    redis_server: RedisServer,
    fleet: Fleet,
    fleet_scale: FleetScale,
    short_lifetime: float,
    figures: Figures,
) -> None:
    workers, seconds = fleet_scale.workers, short_lifetime * fleet_scale.lifetimes
    figures["workers"] = workers
    figures["lifetime_s"] = short_lifetime
    figures["lifetimes"] = fleet_scale.lifetimes

    # Without the shared tier: every worker fetches for itself.
    gate = fleet.start([spec(sandbox, seconds=seconds, store=None) for _ in range(workers)])
    sandbox.reset_calls()
    gate.set()
    alone = fleet.collect(workers, timeout=seconds + 60)
    alone_calls = get_credentials(sandbox)
    assert_no_failures(alone, workers)
    figures["first_connect_median_without_s"] = round(
        statistics.median(s["first_connect"] for s in alone), 3
    )

    # With it; a cold worker and a warm-fleet joiner wait to start halfway through.
    gate = fleet.start([spec(sandbox, seconds=seconds, store=redis_server) for _ in range(workers)])
    joiners = fleet.start(
        [
            spec(sandbox, seconds=0, store=redis_server, name="warm"),
            spec(sandbox, seconds=0, store=None, name="cold"),
        ]
    )
    sandbox.reset_calls()
    gate.set()
    # The joiners start once the fleet has published a login: the warm one finds it.
    wait_for(lambda: entry_keys(redis_server), what="the fleet's login in the store")
    joiners.set()
    summaries = fleet.collect(workers + 2, timeout=seconds + 120)
    joined = {s["name"]: s for s in summaries if s["name"]}
    together = [s for s in summaries if not s["name"]]
    shared_calls = get_credentials(sandbox)
    assert_no_failures(together, workers)
    assert_no_failures(list(joined.values()), 2)

    per_lifetime_alone = alone_calls / fleet_scale.lifetimes
    per_lifetime_shared = (shared_calls - 1) / fleet_scale.lifetimes  # the cold joiner's one
    figures["get_credentials_per_lifetime_without"] = round(per_lifetime_alone, 1)
    figures["get_credentials_per_lifetime_with"] = round(per_lifetime_shared, 1)
    figures["connects"] = sum(s["connects"] for s in together)
    figures["credential_reads"] = sum(s["credentials"] for s in together)
    figures["first_connect_median_with_s"] = round(
        statistics.median(s["first_connect"] for s in together), 3
    )
    figures["warm_join_first_connect_halfway_s"] = round(joined["warm"]["first_connect"], 3)
    figures["cold_join_first_connect_s"] = round(joined["cold"]["first_connect"], 3)
    figures["warm_join_get_credentials"] = joined["warm"]["first_login_stats"].get(
        "redshift-serverless.GetCredentials", 0
    )
    # Alone, every worker fetches for itself; shared, the whole fleet makes about as many
    # calls as one worker alone (counted, not timed: a loaded machine stretches both runs).
    own_fetches = [s["stats"].get("redshift-serverless.GetCredentials", 0) for s in alone]
    assert min(own_fetches) >= 1
    assert shared_calls - 1 <= 2 * max(own_fetches) < workers
    assert {u for s in together for u in s["users"]} == {"IAM:sandbox-admin"}


def test_a_worker_joining_a_warm_fleet_fetches_nothing(
    sandbox: Sandbox, redis_server: RedisServer, fleet: Fleet, figures: Figures
) -> None:
    # Logins of the sandbox's usual lifetime (not the shortened one above, where a joiner
    # that the machine's load delays may meet a login due for refresh, and refresh it
    # for the fleet): the joiner's login comes from the store, whatever the timing.
    member = fleet.start([spec(sandbox, seconds=0, store=redis_server)])
    sandbox.reset_calls()
    member.set()
    assert_no_failures(fleet.collect(1, timeout=120), 1)
    joiner = fleet.start([spec(sandbox, seconds=0, store=redis_server, name="warm")])
    joiner.set()
    [joined] = fleet.collect(1, timeout=120)
    assert_no_failures([joined], 1)
    figures["warm_join_first_connect_s"] = round(joined["first_connect"], 3)
    assert joined["stats"].get("redshift-serverless.GetCredentials") is None
    assert joined["stats"].get("sts.GetCallerIdentity") is None
    assert get_credentials(sandbox) == 1


def test_the_lease_holder_killed_mid_fetch(
    sandbox: Sandbox,
    redis_server: RedisServer,
    fleet: Fleet,
    fleet_scale: FleetScale,
    figures: Figures,
) -> None:
    # The waiters' own patience is long: giving up on the dead holder and fetching alone
    # would show as many fetches, not as a slow test.
    workers, lease = fleet_scale.workers, 2.0
    cache = {"lease_seconds": lease, "wait_seconds": 60.0}
    gate = fleet.start(
        [spec(sandbox, seconds=1.0, store=redis_server, cache=cache) for _ in range(workers)]
    )
    sandbox.latency(3 * lease, operation="GetCredentials", count=1)  # the first fetch hangs
    sandbox.reset_calls()
    gate.set()
    tokens: list[bytes] = []

    def lease_taken() -> bool:
        keys = lease_keys(redis_server)
        token = redis_server.client().get(keys[0]) if keys else None
        if token:
            tokens.append(token)
        return bool(token)

    wait_for(lease_taken, what="lease taken")
    holder = int(tokens[0].decode().split(":")[1])
    leased_at = time.time()
    # Mid-fetch: its GetCredentials call has reached AWS (and hangs there).
    wait_for(lambda: get_credentials(sandbox) >= 1, what="GetCredentials from the holder")
    os.kill(holder, signal.SIGKILL)
    summaries = fleet.collect(workers - 1, timeout=180)
    assert_no_failures(summaries, workers - 1)
    assert holder not in {s["pid"] for s in summaries}
    # From the moment the (soon dead) holder took the lease to each worker's login, and to
    # its first connection (32 TLS logins at once on a small machine take their time).
    waited = [s["first_login_at"] - leased_at for s in summaries]
    connected = [s["first_connect_at"] - leased_at for s in summaries]
    figures["workers"] = workers
    figures["lease_s"] = lease
    figures["slowest_login_after_lease_taken_s"] = round(max(waited), 2)
    figures["median_login_after_lease_taken_s"] = round(statistics.median(waited), 2)
    figures["slowest_connect_after_lease_taken_s"] = round(max(connected), 2)
    figures["get_credentials"] = get_credentials(sandbox)
    # When the dead holder's lease lapses, one waiter takes it over and fetches for all the
    # others; nobody sits out its own patience and fetches alone. (A second takeover is
    # allowed: on a loaded machine the new holder's fetch may outlast its 2 s lease.)
    fetched_here = [
        s["pid"] for s in summaries if s["stats"].get("redshift-serverless.GetCredentials", 0)
    ]
    assert 1 <= len(fetched_here) <= 2, fetched_here
    assert get_credentials(sandbox) == 1 + len(fetched_here)


def test_the_store_stopped_mid_run(
    sandbox: Sandbox,
    redis_server: RedisServer,
    fleet: Fleet,
    fleet_scale: FleetScale,
    short_lifetime: float,
    figures: Figures,
) -> None:
    workers, seconds = fleet_scale.workers, 2.5 * short_lifetime
    gate = fleet.start([spec(sandbox, seconds=seconds, store=redis_server) for _ in range(workers)])
    gate.set()
    wait_for(lambda: entry_keys(redis_server), what="login in the store")
    redis_server.stop()
    summaries = fleet.collect(workers, timeout=seconds + 60)
    assert_no_failures(summaries, workers)
    warned = [
        [m for m in s["warnings"] if "shared cache" in m and "not answering" in m]
        for s in summaries
    ]
    figures["workers"] = workers
    figures["connects"] = sum(s["connects"] for s in summaries)
    figures["warnings_per_worker"] = sorted({len(w) for w in warned})
    # One warning per worker, not one per call; a worker that needed no login from the
    # store after it stopped (its run ended first on a loaded machine) has none to give.
    assert all(len(w) <= 1 for w in warned), warned
    assert any(warned), "no worker noticed the store had stopped"


def test_two_identities_in_one_fleet(
    sandbox: Sandbox,
    redis_server: RedisServer,
    fleet: Fleet,
    fleet_scale: FleetScale,
    figures: Figures,
) -> None:
    # Logins that outlive the run, and a lease and patience no fetch outlasts, however
    # loaded the machine: each identity is then fetched exactly once, whatever the timing.
    cache = {"lease_seconds": 60.0, "wait_seconds": 60.0}
    roles = {
        make_role("fleet-blue"): "IAMR:fleet-blue",
        make_role("fleet-green"): "IAMR:fleet-green",
    }
    specs = [
        spec(
            sandbox,
            seconds=fleet_scale.lifetime,
            store=redis_server,
            role_arn=role,
            name=role,
            cache=cache,
        )
        for role in roles
        for _ in range(fleet_scale.workers // 2)
    ]
    gate = fleet.start(specs)
    sandbox.reset_calls()
    gate.set()
    summaries = fleet.collect(len(specs), timeout=fleet_scale.lifetime + 180)
    assert_no_failures(summaries, len(specs))
    for summary in summaries:
        assert summary["users"] == [roles[summary["name"]]], summary["users"]
    figures["workers"] = len(specs)
    figures["get_credentials"] = get_credentials(sandbox)
    fetches = {
        role: sum(
            s["stats"].get("redshift-serverless.GetCredentials", 0)
            for s in summaries
            if s["name"] == role
        )
        for role in roles
    }
    assert fetches == {role: 1 for role in roles}
    assert get_credentials(sandbox) == 2
