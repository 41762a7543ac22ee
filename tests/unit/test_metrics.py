"""The figures as plain numbers: counting, flattening for stats(), the process's totals,
and the path without OpenTelemetry (its API not importable)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from rsauth import _metrics
from rsauth._cache import Lease, RefreshCache
from rsauth._metrics import Figures, attributes

from .conftest import FakeClock

WHERE = attributes(method="iam", workgroup="analytics", region="eu-west-1")


def by_key(key: str) -> _metrics.Attributes:
    return attributes(method=key, workgroup="analytics", region="eu-west-1")


def test_attributes_leave_out_what_is_not_given() -> None:
    assert attributes(method="iam", workgroup=None, region="eu-west-1") == (
        ("method", "iam"),
        ("region", "eu-west-1"),
    )


def test_a_watched_cache_counts_without_any_call_into_the_figures(clock: FakeClock) -> None:
    figures = Figures()
    cache: RefreshCache[str, str] = RefreshCache("t", clock=clock)
    figures.watch(cache, by_key)
    for _ in range(3):
        cache.get("iam", lambda: Lease("login", lifetime=900))
    clock.advance(650)  # past L/3 before expiry: one refresh ahead of it
    cache.get("iam", lambda: Lease("login", lifetime=900))
    cache.get("secret", lambda: Lease("login", refresh_after=300))
    stats = figures.stats()
    assert (stats["cache.hits"], stats["cache.misses"], stats["cache.refreshes"]) == (2, 2, 1)
    assert stats["cache.logins"] == 2
    assert figures.cached() == {by_key("iam"): 1, by_key("secret"): 1}


def test_stats_flattens_attributes_into_keys() -> None:
    figures = Figures()
    figures.add("aws.calls", attributes(service="sts", operation="GetCallerIdentity"))
    figures.add("aws.calls", attributes(service="sts", operation="GetCallerIdentity"))
    code = attributes(service="redshift-serverless", operation="GetCredentials",
                      code="ThrottlingException", region="eu-west-1")
    figures.add("aws.errors", code)
    figures.add("login.fetches", attributes(operation="GetCredentials", **dict(WHERE)))
    figures.add("cache.hits", (("tier", "shared"),), 4)
    figures.add("cache.waits", (("tier", "shared"),))
    figures.connected(WHERE, login_seconds=0.25, driver_seconds=0.0125)
    stats = figures.stats()
    assert stats["sts.GetCallerIdentity"] == 2
    assert stats["aws.errors"] == stats["aws.errors.ThrottlingException"] == 1
    assert stats["login.fetches"] == stats["login.fetches.iam"] == 1
    assert stats["cache.shared.hits"] == 4
    assert stats["cache.shared.waits"] == 1
    assert stats["cache.hits"] == 0
    assert (stats["connect.count"], stats["connect.login_us"], stats["connect.driver_us"]) == (
        1, 250_000, 12_500,
    )
    assert set(_metrics.STATS_KEYS) <= set(stats)


def test_a_figures_gone_still_counts_in_the_totals() -> None:
    # The counters OpenTelemetry reads never go down when a Broker is dropped.
    name = "login.recoveries"
    marker = attributes(workgroup="gone-figures-test")
    figures = Figures()
    figures.add(name, marker, 3)
    assert _metrics.totals(name)[marker] == 3
    del figures
    gc.collect()
    assert _metrics.totals(name)[marker] == 3
    again = Figures()
    again.add(name, marker)
    assert _metrics.totals(name)[marker] == 4


def test_the_totals_sum_every_live_figures() -> None:
    marker = attributes(workgroup="live-figures-test")
    first, second = Figures(), Figures()
    first.add("login.retries", marker)
    second.add("login.retries", marker, 2)
    assert _metrics.totals("login.retries")[marker] == 3


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True,
        timeout=120, check=False,
    )


def test_rsauth_never_imports_opentelemetry_and_registers_once_the_application_has() -> None:
    # Importing the API costs about 10 ms: paid only by an application that uses it.
    result = run(
        "import sys, rsauth\n"
        "from rsauth import _metrics\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "broker = rsauth.Broker(region='eu-west-1')\n"
        "broker._figures.add('login.fetches', _metrics.attributes(method='iam'))\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "assert not _metrics._installed\n"
        "import opentelemetry.metrics\n"
        "broker._figures.add('login.fetches', _metrics.attributes(method='iam'))\n"
        "assert _metrics._installed and _metrics._histogram is not None\n"
    )
    assert result.returncode == 0, result.stderr


def test_without_the_api_the_figures_are_plain_numbers() -> None:
    # The extra not installed: importing opentelemetry fails (a None in sys.modules does).
    result = run(
        "import sys\n"
        "sys.modules['opentelemetry'] = sys.modules['opentelemetry.metrics'] = None\n"
        "import rsauth\n"
        "from rsauth import _metrics\n"
        "broker = rsauth.Broker(region='eu-west-1')\n"
        "figures = broker._figures\n"
        "figures.add('login.fetches', _metrics.attributes(method='iam', operation='x'))\n"
        "figures.connected((), 0.5, 0.25)\n"
        "stats = broker.stats()\n"
        "assert _metrics._installed and _metrics._histogram is None\n"
        "assert stats['login.fetches.iam'] == 1, stats\n"
        "assert stats['connect.count'] == 1 and stats['connect.login_us'] == 500000, stats\n"
        "assert not [m for m, v in sys.modules.items() if m.startswith('opentelemetry') and v]\n"
    )
    assert result.returncode == 0, result.stderr
