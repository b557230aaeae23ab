"""A real SMTP sink on loopback (aiosmtpd) with STARTTLS or implicit TLS and AUTH, for tests and the demo.

Every accepted message is kept in :attr:`SmtpSink.messages` and written to
``base_dir/mail/NNNN.eml``. The server certificate comes from a throw-away CA
made with ``trustme`` (``base_dir/ca.pem``); ``base_dir/other-ca.pem`` is a
second CA that did *not* sign it, for "certificate not trusted" tests.

Run it alone for the demo::

    python -m sandbox.smtp DIR [--port 2525] [--implicit] [--user quotawatch:secret]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["ReceivedMail", "SmtpSink"]


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message with its envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    path: Path


class _QuietDeprecation(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation warning of its own on every successful AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietDeprecation())


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.sink._store(envelope.mail_from or "", tuple(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"


class _OAuth2Handler(_Handler):
    """Adds AUTH XOAUTH2 and OAUTHBEARER; the sink's ``oauth2`` callable judges (user, token)."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, message="501 5.5.2 Can't decode base64")
        else:
            got = await server.challenge_auth("")
            if not isinstance(got, bytes):
                return AuthResult(success=False, handled=True)
            blob = got
        user, token = parse_bearer(blob)
        check = self.sink.oauth2
        if check is not None and user and token and check(user, token):
            self.sink.oauth2_logins.append((mechanism, user))
            return AuthResult(success=True, auth_data=user)
        with self.sink._lock:
            self.sink.auth_failures += 1
        error = {
            "status": "401",
            "schemes": "bearer",
            "scope": "https://outlook.office.com/SMTP.Send",
        }
        await server.challenge_auth(
            json.dumps(error)
        )  # RFC 7628 3.2.2: the client answers, then 535
        return AuthResult(success=False, handled=False)


def parse_bearer(blob: bytes) -> tuple[str, str]:
    """(user, token) of an XOAUTH2 or OAUTHBEARER client response ("" where missing)."""
    text = blob.decode("utf-8", "replace")
    user = token = ""
    head, _, rest = text.partition("\x01")
    if head.startswith("n,"):  # OAUTHBEARER: gs2 header "n,a=user,"
        for part in head.split(","):
            if part.startswith("a="):
                user = part[2:].replace("=2C", ",").replace("=3D", "=")
        fields = rest.split("\x01")
    else:
        fields = text.split("\x01")
    for item in fields:
        if item.startswith("user="):
            user = item[5:]
        elif item.lower().startswith("auth=bearer "):
            token = item[12:]
    return user, token


class _LongAuthSMTP(SMTP):
    """RFC 4954 allows AUTH lines of 12,288 octets (an OAuth2 token is ~2 KB); aiosmtpd's default is 512."""

    line_length_limit = 16384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits: collections.defaultdict[str, int] = collections.defaultdict(lambda: 512)
        limits["AUTH"] = 12288
        self.command_size_limits = limits


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _LongAuthSMTP(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """An SMTP server on 127.0.0.1 that accepts and keeps every message.

    ``starttls=True`` offers STARTTLS and refuses MAIL before it; ``implicit_tls=True`` speaks
    TLS from the first byte (like port 465). ``auth`` maps usernames to passwords and makes
    AUTH mandatory (only after TLS). ``oauth2`` (a callable judging user and bearer token) adds
    AUTH XOAUTH2 and OAUTHBEARER (and makes AUTH mandatory); successful ones are recorded in
    :attr:`oauth2_logins`. ``cert_file``/``key_file`` replace the throw-away certificate.
    """

    def __init__(
        self,
        base_dir: Path | str,
        *,
        starttls: bool = True,
        implicit_tls: bool = False,
        auth: dict[str, str] | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        oauth2: Callable[[str, str], bool] | None = None,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        self.base_dir = Path(base_dir)
        self.mail_dir = self.base_dir / "mail"
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or 0
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = dict(auth) if auth else ({} if oauth2 else None)
        self.oauth2 = oauth2
        self.oauth2_logins: list[tuple[str, str]] = []
        self.messages: list[ReceivedMail] = []
        self.auth_failures = 0
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.ca_file = self.base_dir / "ca.pem"
        self.other_ca_file = self.base_dir / "other-ca.pem"
        if cert_file is None or key_file is None:
            cert_file, key_file = self._make_certs()
        self.cert_file, self.key_file = cert_file, key_file

    def _make_certs(self) -> tuple[Path, Path]:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        trustme.CA().cert_pem.write_to_path(str(self.other_ca_file))
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = self.base_dir / "server.pem", self.base_dir / "server.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)
        return cert_file, key_file

    def _server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        if isinstance(data, LoginPassword):
            user = data.login.decode("utf-8", "replace")
            if self.auth.get(user) == data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=user)
        with self._lock:
            self.auth_failures += 1
        return AuthResult(success=False, handled=False)

    def _store(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> None:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        with self._lock:
            path = self.mail_dir / f"{len(self.messages) + 1:04d}.eml"
            path.write_bytes(raw)
            self.messages.append(ReceivedMail(mail_from, rcpt_tos, message, raw, path))

    def start(self) -> SmtpSink:
        """Listen (again, on the same port after a stop); returns self."""
        if self._controller is not None:
            return self
        if not self.port:
            self.port = _free_port(self.host)
        ctx = self._server_context()
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.implicit_tls:
            kwargs["ssl_context"] = ctx
        elif self.starttls:
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self.auth is not None:
            kwargs.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=True
            )
        handler = _OAuth2Handler(self) if self.oauth2 else _Handler(self)
        controller = _Controller(handler, server_hostname="sink.sandbox", **kwargs)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the sandbox SMTP sink until Ctrl-C.")
    parser.add_argument("dir", type=Path, help="where ca.pem and mail/*.eml go")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--implicit", action="store_true", help="implicit TLS instead of STARTTLS")
    parser.add_argument("--user", default=None, help="USER:PASSWORD to require AUTH")
    parser.add_argument(
        "--user-env", default=None, help="environment variable holding USER:PASSWORD"
    )
    args = parser.parse_args()
    user = os.environ.get(args.user_env, "") if args.user_env else args.user
    auth = dict([user.split(":", 1)]) if user else None
    logging.basicConfig(level=logging.INFO)
    sink = SmtpSink(
        args.dir, starttls=not args.implicit, implicit_tls=args.implicit, auth=auth, port=args.port
    ).start()
    mode = "implicit TLS" if args.implicit else "STARTTLS"
    print(
        f"SMTP sink on {sink.host}:{sink.port} ({mode}); CA {sink.ca_file}; mail in {sink.mail_dir}"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
