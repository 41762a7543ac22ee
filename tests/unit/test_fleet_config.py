"""RedisCache configuration: URLs (TLS, ACL users), key modes, the environment, jitter math."""

from __future__ import annotations

import base64
import math
import random

import pytest

import rsauth
from rsauth._cache import Lease, windows
from rsauth._fleet._store import Store, StoreUnavailable, redact_url

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
    assert redact_url("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=***&db=1"
    assert redact_url("unix:///run/r.sock?db=2&PASSWORD=pw") == "unix:///run/r.sock?db=2&PASSWORD=***"
    assert redact_url("redis://u:a@h/0?password=b") == "redis://u:***@h/0?password=***"


def test_a_password_in_the_query_string_stays_out_of_reprs_and_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = rsauth.RedisCache(
        f"redis://127.0.0.1:{_closed_port()}/0?password=hunter2-query", fleet_key=KEY,
        timeout=0.2,
    )
    assert cache._store._redis().connection_pool.connection_kwargs["password"] == "hunter2-query"
    assert "hunter2-query" not in repr(cache)
    assert "hunter2-query" not in cache.url
    with pytest.raises(StoreUnavailable):
        cache._store.read("rsauth:v1:e:x")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "password=***" in warnings[0].getMessage()
    assert "hunter2-query" not in caplog.text
    cache.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_tls_always_checks_the_host_name() -> None:
    cache = rsauth.RedisCache("rediss://cache.example.com:6380/0", fleet_key=KEY)
    kwargs = cache._store._redis().connection_pool.connection_kwargs
    assert kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_cert_reqs"] == "required"
    cache.close()
    plain = rsauth.RedisCache("redis://cache.example.com:6379/0", fleet_key=KEY)
    assert "ssl_check_hostname" not in plain._store._redis().connection_pool.connection_kwargs
    plain.close()


@pytest.mark.parametrize(
    "query", ["ssl_cert_reqs=none", "ssl_check_hostname=false", "SSL_CERT_REQS=optional"]
)
def test_a_url_cannot_turn_tls_checks_off(query: str) -> None:
    with pytest.raises(rsauth.ConfigurationError, match="always checks both") as raised:
        rsauth.RedisCache(f"rediss://u:pw-9@cache.example.com/0?{query}", fleet_key=KEY)
    assert "pw-9" not in str(raised.value)


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


def test_no_key_material_in_reprs() -> None:
    raw = base64.b64decode(KEY)
    cache = rsauth.RedisCache("redis://u:pw-in-url@h/0?password=pw-in-query", fleet_key=KEY)
    texts = [repr(cache), str(cache), cache.url, repr(cache._sealer)]
    for form in (KEY, raw.hex(), repr(raw)[2:-1], "pw-in-url", "pw-in-query"):
        assert not any(form in text for text in texts)
    cache.close()
