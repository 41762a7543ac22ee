"""The shared store: a Redis or Valkey server through redis-py, never in the way.

Every operation has short socket timeouts and no retries of its own. When one
fails, the store is treated as down for ``retry_after`` seconds — callers fetch
from AWS themselves meanwhile — and that is said once at WARNING (again only
after ``WARNING_INTERVAL`` seconds), and at INFO when it answers again.

``redis`` is imported when the store is first used, never by ``import rsauth``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from rsauth._errors import ConfigurationError

__all__ = ["SCHEMES", "Store", "StoreUnavailable", "Subscription", "redact_url"]

logger = logging.getLogger("rsauth")

SCHEMES = ("redis", "rediss", "unix")
WARNING_INTERVAL = 600.0

# Deletes KEYS[1] only while it still holds ARGV[1]: releasing one's own lease,
# dropping the very entry that was refused (not a newer one).
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class StoreUnavailable(Exception):
    """Internal: the store did not answer; the caller goes to AWS itself."""


class Subscription:
    """One pub/sub connection, listening to one channel until closed."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    def wait(self, seconds: float) -> bool:
        """True when a message came within ``seconds``; False on none, or on any error
        (the caller looks at the store again either way, and notices if it is down)."""
        try:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=seconds)
        except Exception:
            return False
        return message is not None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pubsub.close()


def redact_url(url: str) -> str:
    """``url`` with its passwords masked, for logs and reprs: the userinfo's (an ACL user's
    or ``AUTH``'s) and any ``password`` in the query string (redis-py reads it there too)."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        url = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    base, mark, query = url.partition("?")
    return base + mark + _QUERY_PASSWORD.sub(r"\1***", query)


# name=value pairs of the query whose name holds "password" (password=, ssl_password=).
_QUERY_PASSWORD = re.compile(r"((?:^|[&;])[^&;=]*password[^&;=]*=)[^&;]*", re.IGNORECASE)
# TLS settings a rediss:// URL may not turn off (redis-py reads them from the query).
_TLS_KEPT = {"ssl_cert_reqs": ("required",), "ssl_check_hostname": ("true", "1", "yes", "y")}


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"shared cache url {redact_url(url)!r}: scheme {parts.scheme!r} is not one of "
            f"{', '.join(s + '://' for s in SCHEMES)} (Redis and Valkey both speak these)"
        )
    for name, value in parse_qsl(parts.query):
        accepted = _TLS_KEPT.get(name.lower())
        if accepted is not None and value.strip().lower() not in accepted:
            raise ConfigurationError(
                f"shared cache url {redact_url(url)!r}: {name}={value!r} would stop checking "
                "the server's certificate or host name; rsauth always checks both over "
                "rediss:// (give ssl_ca_certs= in the URL for a private CA)"
            )
    return url


class Store:
    """redis-py client for one URL, made on first use; safe to share between threads."""

    def __init__(self, url: str, *, timeout: float, retry_after: float) -> None:
        self.url = check_url(url)
        self._timeout = timeout
        self._retry_after = retry_after
        self._start()

    def _start(self) -> None:
        # Guards the client and the health fields.
        self._lock = threading.Lock()
        self._client: Any = None
        self._release: Any = None
        self._down_until = 0.0
        self._down = False
        self._warned_at = -math.inf

    def reset(self) -> None:
        """A forked child: a client of its own (redis-py's pools also notice the fork)."""
        self._start()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- health -----------------------------------------------------------

    def available(self) -> bool:
        """False while the store is taken to be down (until ``retry_after`` has passed)."""
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        now = time.monotonic()
        with self._lock:
            self._down_until = now + self._retry_after
            was_down, self._down = self._down, True
            warn = not was_down and now - self._warned_at >= WARNING_INTERVAL
            if warn:
                self._warned_at = now
        if warn:
            logger.warning(
                "shared cache %s is not answering (%s); fetching logins from AWS directly "
                "until it does (checked again every %.0f s)",
                redact_url(self.url),
                type(exc).__name__,
                self._retry_after,
            )
        elif not was_down:
            logger.info(
                "shared cache %s is not answering again (%s); fetching logins from AWS directly",
                redact_url(self.url),
                type(exc).__name__,
            )
        return StoreUnavailable(type(exc).__name__)

    def _answered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                logger.info("shared cache %s answers again", redact_url(self.url))

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                tls: dict[str, Any] = {}
                if urlsplit(self.url).scheme == "rediss":
                    # Whatever redis-py's defaults: verify the certificate and the host name.
                    tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
                self._client = redis.Redis.from_url(
                    self.url,
                    **tls,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    # One attempt: falling back to AWS is the retry.
                    retry=Retry(NoBackoff(), 0),
                    retry_on_timeout=False,
                    client_name="rsauth",
                )
                self._release = self._client.register_script(_DELETE_IF_EQUAL)
            return self._client

    def _run(self, operation: Any) -> Any:
        if not self.available():
            raise StoreUnavailable("down")
        try:
            result = operation(self._redis())
        except Exception as exc:
            # redis-py raises RedisError subclasses, and OSError from sockets and TLS.
            raise self._failed(exc) from None
        self._answered()
        return result

    # -- operations -------------------------------------------------------

    def read(self, key: str) -> tuple[bytes, int] | None:
        """The value at ``key`` and its milliseconds left, or None."""

        def read(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            return pipe.execute()

        value, pttl = self._run(read)
        if value is None or pttl is None or pttl <= 0:
            return None
        return bytes(value), int(pttl)

    def write(self, key: str, value: bytes, milliseconds: int) -> None:
        self._run(lambda client: client.set(key, value, px=milliseconds))

    def acquire(self, key: str, token: str, milliseconds: int) -> bool:
        """Set-if-absent with an expiry: True when ``token`` now holds ``key``."""
        return bool(self._run(lambda client: client.set(key, token, nx=True, px=milliseconds)))

    def delete_if(self, key: str, value: bytes | str) -> bool:
        """Delete ``key`` only while it holds ``value`` (atomic, a Lua script)."""

        def delete(client: Any) -> Any:
            return self._release(keys=[key], args=[value], client=client)

        return bool(self._run(delete))

    def delete(self, *keys: str) -> int:
        """Delete ``keys``, one ``DEL`` each (cluster mode: keys may live on different slots)."""
        return sum(int(self._run(lambda client, key=key: client.delete(key))) for key in keys)

    def get(self, key: str) -> bytes | None:
        value = self._run(lambda client: client.get(key))
        return None if value is None else bytes(value)

    def publish(self, channel: str) -> None:
        """Tell the workers subscribed to ``channel`` to look again."""
        from redis.exceptions import ResponseError

        def publish(client: Any) -> None:
            # NOPERM (an ACL user without the channel) is an answer: waiters then poll.
            with contextlib.suppress(ResponseError):
                client.publish(channel, b"1")

        self._run(publish)

    def subscribe(self, channel: str) -> Subscription | None:
        """A subscription to ``channel`` the server has confirmed, so nothing published
        after this returns is missed; None when the server refuses it (an ACL user without
        that channel): the caller polls instead."""
        from redis.exceptions import ResponseError

        pubsub: Any = None

        def subscribe(client: Any) -> Any:
            nonlocal pubsub
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(channel)
                return pubsub.get_message(timeout=self._timeout)
            except ResponseError:
                return None  # NOPERM: an answer, not a store down

        try:
            confirmed = self._run(subscribe)
        except StoreUnavailable:
            if pubsub is not None:
                pubsub.close()
            raise
        if not isinstance(confirmed, dict) or confirmed.get("type") != "subscribe":
            pubsub.close()
            return None
        return Subscription(pubsub)

    def holder(self, key: str) -> str | None:
        value = self._run(lambda client: client.get(key))
        return None if value is None else bytes(value).decode(errors="replace")
