"""Fleet mode: a shared login cache in Redis or Valkey behind the in-process one.

``_shared`` (:class:`RedisCache`: read, lease, fetch once, publish), ``_crypto``
(entries sealed with AES-GCM, bound to their login; fleet-key and KMS modes)
and ``_store`` (redis-py, short timeouts, down means going to AWS directly).
Importing this package imports neither ``redis`` nor ``cryptography``.
"""

from __future__ import annotations

from rsauth._fleet._shared import (
    RedisCache,
    SharedRequest,
    request_for,
    shared_cache_from_environ,
)

__all__ = ["RedisCache", "SharedRequest", "request_for", "shared_cache_from_environ"]
