"""The HTTP side of the test kit's OAuth2 provider: routes GET/POST requests to :class:`sandbox.oauth_server.OAuthServer`."""

from __future__ import annotations

import base64
import contextlib
import json
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from sandbox.oauth_graph import answer as graph_answer

if TYPE_CHECKING:
    from sandbox.oauth_server import OAuthServer


def error(code: str, description: str) -> dict[str, Any]:
    """An OAuth2 error answer (RFC 6749 section 5.2)."""
    return {"error": code, "error_description": description}


class Handler(BaseHTTPRequestHandler):
    """One request; ``provider`` is set on a subclass per server."""

    provider: OAuthServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.endswith("/.well-known/openid-configuration"):
            self._send(200, self.provider.discovery())
        elif path.endswith("/discovery/v2.0/keys"):
            self._send(200, {"keys": []})
        elif path.startswith("/graph/"):
            self._raw(*graph_answer(self.provider, path, self.headers.get("Authorization", "")))
        else:
            self._send(404, error("not_found", path))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        basic = None
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            with contextlib.suppress(ValueError):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                basic = (user, pw)
        p = self.provider
        if path.endswith("/oauth2/v2.0/token"):
            self._send(*p.token(form, basic))
        elif path.endswith("/oauth2/v2.0/devicecode"):
            self._send(*p.device_code(form))
        elif path.endswith("/oauth2/v2.0/revoke"):
            self._send(*p.revoke(form))
        elif path == "/introspect":
            self._send(*p.introspect(form))
        else:
            self._send(404, error("not_found", path))
