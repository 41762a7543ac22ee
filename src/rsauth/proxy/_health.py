"""``/liveness``, ``/readiness`` and ``/metrics`` over HTTP on loopback, as the Cloud SQL
Auth Proxy serves them (https://github.com/GoogleCloudPlatform/cloud-sql-proxy,
"Running behind a health check"): liveness is the process answering, readiness
that every proxy has had a login from AWS, metrics the Prometheus text."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rsauth.proxy._metrics import render
from rsauth.proxy._server import Proxy

__all__ = ["HealthServer"]

log = logging.getLogger("rsauth.proxy")


class HealthServer:
    """A small HTTP server for ``proxies``; ``port`` 0 picks one (read :attr:`port`)."""

    def __init__(self, proxies: Sequence[Proxy], port: int = 0, address: str = "127.0.0.1"):
        self.proxies = list(proxies)
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, kind = health.answer(self.path.split("?", 1)[0])
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health: " + format, *args)  # noqa: G003 - http.server's own format

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self.address = address
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def answer(self, path: str) -> tuple[int, str, str]:
        """Status, body and content type of ``/liveness``, ``/readiness`` or ``/metrics``."""
        text = "text/plain; charset=utf-8"
        if path == "/liveness":
            return 200, "ok\n", text
        if path == "/readiness":
            waiting = [proxy.name for proxy in self.proxies if not proxy.ready]
            if waiting:
                return 503, f"no login yet for: {', '.join(waiting)}\n", text
            return 200, "ok\n", text
        if path == "/metrics":
            snapshots = {proxy.name: proxy.stats() for proxy in self.proxies}
            return 200, render(snapshots), "text/plain; version=0.0.4; charset=utf-8"
        return 404, "not found: /liveness, /readiness, /metrics\n", text

    def start(self) -> HealthServer:
        """Serve in a daemon thread; returns itself."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rsauth-proxy-health", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
