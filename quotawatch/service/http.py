"""The HTTP endpoint: a WSGI app (/metrics from prometheus_client, /healthz) under wsgiref, with optional TLS and basic auth."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app
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


Start = Callable[[str, list[tuple[str, str]]], Any]
App = Callable[[dict[str, Any], Start], Iterable[bytes]]


def _text(
    start: Start, status: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
) -> list[bytes]:
    start(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
    return [body]


def basic_auth(app: App, credentials: tuple[bytes, bytes]) -> App:
    """``app`` behind HTTP basic authentication, compared in constant time."""

    def guarded(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        scheme, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        try:
            given = (
                base64.b64decode(value.strip(), validate=True) if scheme.lower() == "basic" else b""
            )
        except (binascii.Error, ValueError):
            given = b""
        user, _, password = given.partition(b":")
        ok_user = hmac.compare_digest(user, credentials[0])
        ok_password = hmac.compare_digest(password, credentials[1])
        if ok_user and ok_password:
            return app(environ, start)
        challenge = ("WWW-Authenticate", 'Basic realm="quotawatch", charset="UTF-8"')
        return _text(start, "401 Unauthorized", b"authentication required\n", [challenge])

    return guarded


def make_app(
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    credentials: tuple[bytes, bytes] | None = None,
) -> App:
    """The WSGI application: ``/metrics`` (prometheus_client's own app: content negotiation,
    gzip, ``name[]`` filters), ``/healthz`` and an index page; more pages mount here."""
    metrics: App = make_wsgi_app(registry)
    if credentials is not None:
        metrics = basic_auth(metrics, credentials)

    def app(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start)
        if path == "/healthz":
            if healthy():
                return _text(start, "200 OK", b"ok\n")
            return _text(start, "503 Service Unavailable", b"scheduler not running\n")
        if path == "/":
            start("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [INDEX]
        return _text(start, "404 Not Found", b"not found\n")

    return app


class _Handler(WSGIRequestHandler):
    timeout = 10
    server_version = "quotawatch"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request; with TLS the handshake runs in that thread, so
    a slow client blocks nobody."""

    daemon_threads = True
    allow_reuse_address = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
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
        credentials = None
        if s.basic_auth_username and s.basic_auth_password_file:
            secret = read_secret(file=s.basic_auth_password_file)
            credentials = (s.basic_auth_username.encode(), secret.get_secret_value().encode())
        server = cls((host, port), _Handler)
        server.set_app(make_app(self.registry, self.healthy, credentials))
        if s.tls_cert_file and s.tls_key_file:
            server.tls = server_tls_context(s.tls_cert_file, s.tls_key_file)
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
