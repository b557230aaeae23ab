"""The HTTP endpoint: /metrics (Prometheus exposition) and /healthz, with optional TLS and basic auth."""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from quotawatch.config import Metrics
from quotawatch.config.secrets import read_secret

log = logging.getLogger(__name__)

INDEX = b"""<html><head><title>quotawatch</title></head><body><h1>quotawatch</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a></p></body></html>
"""


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def server_tls_context(cert_file: Any, key_file: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls: ssl.SSLContext | None = None
    credentials: tuple[bytes, bytes] | None = None
    registry: CollectorRegistry
    healthy: Callable[[], bool]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Run the TLS handshake in the request's own thread, so a slow client blocks nobody."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_Handler.timeout)
        conn = self.tls.wrap_socket(request, server_side=True)
        try:
            _Handler(conn, client_address, self)
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP request from %s failed: %s", client_address[0], sys.exc_info()[1])


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10
    server_version = "quotawatch"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)

    def _send(
        self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        expected = self.server.credentials
        if expected is None:
            return True
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        try:
            given = (
                base64.b64decode(value.strip(), validate=True) if scheme.lower() == "basic" else b""
            )
        except (binascii.Error, ValueError):
            given = b""
        user, _, password = given.partition(b":")
        ok_user = hmac.compare_digest(user, expected[0])
        ok_password = hmac.compare_digest(password, expected[1])
        return ok_user and ok_password

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            if self.server.healthy():
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._send(503, b"scheduler not running\n", "text/plain; charset=utf-8")
        elif path == "/metrics":
            if not self._authorized():
                self._send(401, b"authentication required\n", "text/plain; charset=utf-8",
                           {"WWW-Authenticate": 'Basic realm="quotawatch", charset="UTF-8"'})  # fmt: skip
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            body = encoder(self.server.registry)
            headers = {}
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
            self._send(200, body, content_type, headers)
        elif path == "/":
            self._send(200, INDEX, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET


class MetricsServer:
    """Serves ``registry`` on ``settings.listen`` from a background thread."""

    def __init__(
        self, settings: Metrics, registry: CollectorRegistry, healthy: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.healthy = healthy
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind (raising OSError, e.g. address in use) and serve; returns the bound address."""
        s = self.settings
        host, port = split_listen(s.listen)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        cls = _Server6 if family == socket.AF_INET6 else _Server
        server = cls((host, port), _Handler)
        server.registry, server.healthy = self.registry, self.healthy
        if s.tls_cert_file and s.tls_key_file:
            server.tls = server_tls_context(s.tls_cert_file, s.tls_key_file)
        if s.basic_auth_username and s.basic_auth_password_file:
            secret = read_secret(file=s.basic_auth_password_file)
            server.credentials = (
                s.basic_auth_username.encode(),
                secret.get_secret_value().encode(),
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="http", daemon=True
        )
        self._thread.start()
        bound = server.server_address
        log.info("serving /metrics and /healthz on %s://%s:%s",
                 "https" if server.tls else "http", bound[0], bound[1])  # fmt: skip
        return str(bound[0]), int(bound[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            with suppress(RuntimeError):
                self._thread.join(timeout=5)
