"""Submit a mail over SMTP with a verifying TLS context, required STARTTLS, AUTH and a timeout on every call."""

from __future__ import annotations

import base64
import contextlib
import logging
import smtplib
import socket
import ssl
from collections.abc import Sequence
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from quotawatch.config import OAuth2, Smtp, TlsMode
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import LOGIN_REFUSED, CaFileError, MailError, QuotawatchError, SecretError
from quotawatch.mail.oauth2.sasl import MECHANISMS, Responder
from quotawatch.mail.tls import tls_context
from quotawatch.text import clean
from quotawatch.warnings.render import Rendered

log = logging.getLogger(__name__)


def _words(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
    return f"{exc.smtp_code} {' '.join(text.split())}"[:300]


def _translate(server: str, exc: BaseException) -> MailError:
    """The MailError (with a reason label) for an exception from smtplib, ssl or the socket."""
    if isinstance(exc, MailError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason
        return MailError(server, f"TLS certificate not trusted: {why}; not sent", "tls")
    if isinstance(exc, ssl.SSLError):
        return MailError(server, f"TLS failed: {exc.reason or exc}; not sent", "tls")
    if isinstance(exc, TimeoutError):
        return MailError(server, "timed out", "timeout")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return MailError(server, f"cannot connect: {exc.strerror or exc}", "connect")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return MailError(server, f"login refused: {_words(exc)}", "auth")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{rcpt} ({code})" for rcpt, (code, _) in exc.recipients.items())
        return MailError(server, f"all recipients refused: {refused}", "rejected")
    if isinstance(exc, smtplib.SMTPResponseException):
        return MailError(server, f"server refused: {_words(exc)}", "rejected")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return MailError(server, f"not supported by the server: {exc}", "smtp")
    if isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError | EOFError):
        return MailError(server, f"connection lost: {exc}", "connect")
    if isinstance(exc, smtplib.SMTPException):
        return MailError(server, f"SMTP error: {exc}", "smtp")
    if isinstance(exc, OSError):
        return MailError(server, f"network error: {exc.strerror or exc}", "connect")
    return MailError(server, f"unexpected {type(exc).__name__}: {exc}", "internal")


def _authenticate(conn: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN in UTF-8 (RFC 4616) where offered, else smtplib's mechanisms (ASCII only).

    smtplib's own PLAIN encodes the credentials as ASCII and fails on any other character."""
    mechanisms = (conn.esmtp_features.get("auth") or "").upper().split()
    if "PLAIN" not in mechanisms:
        conn.login(username, password)
        return
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    code, _ = conn.docmd("AUTH", f"PLAIN {token}")
    if code == 334:  # no initial response accepted: the server asks with an empty challenge
        code, _ = conn.docmd(token)
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, b"")


def build_message(
    rendered: Rendered, sender: str, to: Sequence[str], cc: Sequence[str], now: datetime
) -> EmailMessage:
    """A multipart/alternative mail; text from servers or config goes into the body only."""
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["Subject"] = clean(rendered.subject)
    msg["From"] = sender
    if to:
        msg["To"] = tuple(Address(addr_spec=a) for a in to)
    if cc:
        msg["Cc"] = tuple(Address(addr_spec=a) for a in cc)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("quotawatch", domain=msg["From"].addresses[0].domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


class Mailer:
    """Sends one message per SMTP connection as configured in ``smtp:``."""

    def __init__(
        self, smtp: Smtp, secrets: SecretCache, *, local_hostname: str | None = None
    ) -> None:
        self.smtp = smtp
        self.secrets = secrets
        # smtplib's default EHLO name comes from socket.getfqdn(), which may wait on DNS
        self.local_hostname = local_hostname or socket.gethostname()

    @property
    def server(self) -> str:
        return f"{self.smtp.host}:{self.smtp.effective_port}"

    def _connect(self) -> smtplib.SMTP:
        cfg = self.smtp
        try:
            ctx = tls_context(cfg.ca_file)
        except CaFileError as exc:
            raise MailError(self.server, f"smtp.{exc}", "config") from None
        if cfg.tls is TlsMode.implicit:
            return smtplib.SMTP_SSL(
                cfg.host,
                cfg.effective_port,
                local_hostname=self.local_hostname,
                timeout=cfg.timeout,
                context=ctx,
            )
        conn = smtplib.SMTP(
            cfg.host, cfg.effective_port, local_hostname=self.local_hostname, timeout=cfg.timeout
        )
        try:
            conn.ehlo()
            if cfg.tls is TlsMode.starttls:
                if not conn.has_extn("starttls"):
                    raise MailError(
                        self.server,
                        "server does not offer STARTTLS; not sending over an unencrypted link",
                        "tls",
                    )
                conn.starttls(context=ctx)
                conn.ehlo()
        except BaseException:
            conn.close()
            raise
        return conn

    def _login(self, conn: smtplib.SMTP) -> None:
        cfg = self.smtp
        if not cfg.username:
            return
        if cfg.oauth2 is not None:
            self._oauth2_login(conn, cfg.oauth2, cfg.username)
            return
        try:
            password = self.secrets.get(
                cfg.password_file, cfg.password_env, cfg.password_credential
            )
        except SecretError as exc:
            raise MailError(self.server, f"SMTP password: {exc}", "config") from None
        if not conn.has_extn("auth"):
            raise MailError(self.server, "server offers no AUTH but smtp.username is set", "auth")
        try:
            _authenticate(conn, cfg.username, password.get_secret_value())
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(self.server, f"{LOGIN_REFUSED} ({exc.smtp_code})", "auth") from None
        except (smtplib.SMTPServerDisconnected, ConnectionError, EOFError):
            raise MailError(self.server, "connection lost (login)", "connect") from None
        except (OSError, MailError):  # sockets and TLS: the operating system's words
            raise
        except UnicodeError:
            raise MailError(self.server, "could not send credentials (encoding)", "auth") from None
        except Exception as exc:  # noqa: BLE001 - replaced by a message that cannot hold a secret
            why = f"could not send credentials (unexpected {type(exc).__name__})"
            raise MailError(self.server, why, "auth") from None

    def _oauth2_login(self, conn: smtplib.SMTP, settings: OAuth2, username: str) -> None:
        """AUTH XOAUTH2 / OAUTHBEARER with the initial response (RFC 4954)."""
        if self.secrets.tokens is None:
            raise MailError(self.server, "auth: oauth2 but no token source", "config")
        try:
            token = self.secrets.tokens.access_token(settings, username, "smtp")
        except SecretError as exc:
            raise MailError(self.server, f"SMTP OAuth2 client secret: {exc}", "config") from None
        except QuotawatchError as exc:
            raise MailError(self.server, f"SMTP OAuth2 token: {exc}", exc.reason) from None
        mech = MECHANISMS[settings.mechanism]
        if mech not in conn.esmtp_features.get("auth", "").upper().split():
            raise MailError(self.server, f"server does not offer AUTH {mech}", "auth")
        host, port = self.smtp.host, self.smtp.effective_port
        responder = Responder(settings.mechanism, username, token, host, port)
        try:
            conn.auth(mech, lambda challenge=None: responder(challenge).decode("ascii"))
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(self.server, f"{LOGIN_REFUSED} ({exc.smtp_code})", "auth") from None
        except (smtplib.SMTPServerDisconnected, ConnectionError, EOFError):
            raise MailError(self.server, "connection lost (login)", "connect") from None
        except UnicodeError:  # smtplib sends SASL data as ASCII only
            raise MailError(self.server, "could not send credentials (encoding)", "auth") from None

    def send(self, msg: EmailMessage) -> None:
        """Submit ``msg`` to its To and Cc addresses; MailError unless the server accepted it."""
        try:
            conn = self._connect()
            try:
                self._login(conn)
                refused = conn.send_message(msg)
            finally:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    conn.quit()
                conn.close()
        except (OSError, MailError, ValueError) as exc:  # smtplib's and ssl's are OSError
            raise _translate(self.server, exc) from None
        if refused:
            log.warning(
                "mail accepted for some recipients only server=%s refused=%s",
                self.server,
                ", ".join(sorted(refused)),
            )
