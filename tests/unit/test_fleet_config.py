"""RedisCache configuration: URLs (TLS, ACL users), key modes, the environment, jitter math."""

from __future__ import annotations

import base64
import math
import random

import pytest

import rsauth
from rsauth._cache import Lease, windows
from rsauth._fleet._store import Store, redact_url

KEY = base64.b64encode(bytes(range(32))).decode()


def test_url_with_tls_and_an_acl_user() -> None:
    cache = rsauth.RedisCache("rediss://app:s3cret@cache.example.com:6380/2", fleet_key=KEY)
    assert "s3cret" not in repr(cache)
    assert cache.url == "rediss://app:***@cache.example.com:6380/2"
    client = cache._store._redis()  # made without connecting
    pool = client.connection_pool
    assert pool.connection_kwargs["username"] == "app"
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["host"] == "cache.example.com"
    assert pool.connection_kwargs["port"] == 6380
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["socket_timeout"] == 0.25
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.25
    assert pool.connection_class.__name__ == "SSLConnection"
    cache.close()


def test_plain_and_unix_urls() -> None:
    assert rsauth.RedisCache("redis://localhost:6379/0", fleet_key=KEY).url.startswith("redis://")
    assert rsauth.RedisCache("unix:///run/redis.sock", fleet_key=KEY).url.startswith("unix://")
    with pytest.raises(rsauth.ConfigurationError, match="scheme 'http'"):
        rsauth.RedisCache("http://a:b@example.com", fleet_key=KEY)


def test_redaction() -> None:
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    assert redact_url("rediss://:pw@h:1/0") == "rediss://:***@h:1/0"
    assert redact_url("rediss://u:pw@h/0") == "rediss://u:***@h/0"


def test_exactly_one_key_mode() -> None:
    with pytest.raises(rsauth.ConfigurationError, match="needs a key"):
        rsauth.RedisCache("redis://h/0", environ={})
    with pytest.raises(rsauth.ConfigurationError, match="both set"):
        rsauth.RedisCache("redis://h/0", fleet_key=KEY, kms_key_id="alias/x")
    with pytest.raises(rsauth.ConfigurationError, match="both set"):
        rsauth.RedisCache(
            "redis://h/0",
            environ={"RSAUTH_SHARED_CACHE_KEY": KEY, "RSAUTH_SHARED_CACHE_KMS_KEY": "alias/x"},
        )
    assert "KMS key alias/x" in repr(rsauth.RedisCache("redis://h/0", kms_key_id="alias/x"))
    assert "fleet key" in repr(rsauth.RedisCache("redis://h/0", fleet_key=KEY))


def test_from_the_environment() -> None:
    env = {"RSAUTH_SHARED_CACHE_URL": "redis://h:6379/0", "RSAUTH_SHARED_CACHE_KEY": KEY}
    cache = rsauth.RedisCache(environ=env)
    assert cache.url == "redis://h:6379/0"
    with pytest.raises(rsauth.ConfigurationError, match="RSAUTH_SHARED_CACHE_URL"):
        rsauth.RedisCache(environ={})
    with rsauth.Broker(environ=env) as broker:
        assert broker._shared is not None
    with rsauth.Broker(environ={}) as broker:
        assert broker._shared is None


def test_bad_settings() -> None:
    with pytest.raises(rsauth.ConfigurationError, match="jitter"):
        rsauth.RedisCache("redis://h/0", fleet_key=KEY, jitter=2)
    with pytest.raises(rsauth.ConfigurationError, match="positive"):
        rsauth.RedisCache("redis://h/0", fleet_key=KEY, timeout=0)


def test_a_failing_store_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    store = Store("redis://:pw@127.0.0.1:1/0", timeout=0.1, retry_after=0.0)
    for _ in range(3):
        with pytest.raises(Exception, match="ConnectionError"):
            store.read("rsauth:v1:e:x")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "redis://:***@127.0.0.1:1/0 is not answering" in warnings[0]
    assert store._down


# -- jitter and span: the advisory window of the in-process cache -------------------------


def test_jitter_only_delays_within_the_advisory_window() -> None:
    lease = Lease("v", lifetime=900.0)
    plain = windows(0.0, lease)
    rng = random.Random(7)
    seen = []
    for _ in range(500):
        entry = windows(0.0, lease, jitter=0.5, uniform=rng.random)
        assert plain.advisory_at <= entry.advisory_at
        window = plain.mandatory_at - plain.advisory_at
        assert entry.advisory_at <= plain.advisory_at + 0.5 * window
        assert entry.mandatory_at == plain.mandatory_at
        assert entry.expires_at == plain.expires_at
        seen.append(entry.advisory_at)
    assert max(seen) - min(seen) > 0.4 * 0.5 * (plain.mandatory_at - plain.advisory_at)
    full = windows(0.0, lease, jitter=1.0, uniform=lambda: 1.0)
    assert full.advisory_at == plain.mandatory_at
    assert windows(0.0, lease, jitter=0.0, uniform=lambda: 1.0) == plain


def test_span_places_windows_of_a_login_fetched_elsewhere() -> None:
    # 900 s login, read from the store with 500 s left: windows as for its fetcher.
    entry = windows(100.0, Lease("v", lifetime=500.0, span=900.0))
    assert entry.expires_at == 600.0
    assert entry.advisory_at == 600.0 - 300.0
    assert entry.mandatory_at == 600.0 - 120.0
    # Secrets (no expiry) are unaffected by jitter.
    secret = windows(0.0, Lease("v", refresh_after=300.0), jitter=1.0)
    assert secret.advisory_at == 300.0
    assert math.isinf(secret.mandatory_at)
