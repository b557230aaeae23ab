"""A server that refuses a login and echoes what it was sent: quotawatch keeps none of its words.

Real sockets on loopback; each fake server (IMAP, POP3, SMTP) puts the SASL PLAIN response it
got, raw and decoded, into its refusal. The error keeps the fixed words and a known code only.
"""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from quotawatch.config import Account, Smtp
from quotawatch.config.secrets import SecretCache
from quotawatch.errors import AuthError, MailError
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.pop3.session import Pop3Session
from quotawatch.warnings.mailer import Mailer, build_message
from quotawatch.warnings.render import Rendered
from sandbox.loopback import Conversation, LoopbackServer
from tests.integration.test_odd_passwords import FIXED_REFUSAL, leak_forms, sweep
from tests.support import secret_file

PASSWORD = "ëcho-mé€"


def _echo(token: bytes) -> bytes:
    """What a careless server says: the response as sent and decoded (NULs shown as spaces)."""
    decoded = base64.b64decode(token.strip() + b"==="[: -len(token.strip()) % 4 or None])
    return b"you sent " + token.strip() + b" = " + decoded.replace(b"\0", b" ")


class EchoServer(LoopbackServer):
    """Greets, offers SASL PLAIN, refuses the login with an echo of it, then hangs up."""

    def __init__(self, protocol: str) -> None:
        super().__init__(max_connections=4, lifetime=60)
        self.protocol = protocol
        self.refusals = 0

    def _serve(self, sock: socket.socket, number: int) -> None:
        c = Conversation(sock, self._stop, max_seconds=20, max_bytes=1 << 16)
        if self.protocol == "imap":
            c.send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] echo ready\r\n")
            line = c.read_line() or b""
            tag, _, rest = line.partition(b" ")
            token = rest.split()[-1] if len(rest.split()) > 2 else b""
            self._refuse(c, tag + b" NO [AUTHENTICATIONFAILED] " + _echo(token) + b"\r\n")
        elif self.protocol == "pop3":
            c.send(b"+OK echo ready\r\n")
            while (line := c.read_line()) is not None:
                if line.upper().startswith(b"CAPA"):
                    c.send(b"+OK\r\nSASL PLAIN\r\nUIDL\r\n.\r\n")
                elif line.upper().startswith(b"AUTH PLAIN"):
                    c.send(b"+ \r\n")
                else:
                    self._refuse(c, b"-ERR [AUTH] " + _echo(line) + b"\r\n")
                    return
        else:
            c.send(b"220 echo ready ESMTP\r\n")
            while (line := c.read_line()) is not None:
                if line.upper().startswith(b"EHLO"):
                    c.send(b"250-echo\r\n250 AUTH PLAIN\r\n")
                elif line.upper().startswith(b"AUTH"):
                    self._refuse(c, b"535 5.7.8 " + _echo(line.split()[-1]) + b"\r\n")
                elif line.upper().startswith(b"QUIT"):
                    c.send(b"221 bye\r\n")
                    return
                else:
                    c.send(b"503 no\r\n")

    def _refuse(self, c: Conversation, answer: bytes) -> None:
        self.refusals += 1
        c.send(answer)


def _account(protocol: str, port: int, tmp_path: Path) -> Account:
    return Account.model_validate({
        "name": "echo", "protocol": protocol, "host": "127.0.0.1", "port": port, "tls": "none",
        "allow_insecure_plaintext": True, "username": "alice", "quota": "1MiB",
        "password_file": str(secret_file(tmp_path, "alice", PASSWORD)),
    } if protocol == "pop3" else {
        "name": "echo", "protocol": protocol, "host": "127.0.0.1", "port": port, "tls": "none",
        "allow_insecure_plaintext": True, "username": "alice",
        "password_file": str(secret_file(tmp_path, "alice", PASSWORD)),
    })  # fmt: skip


@pytest.mark.parametrize(("protocol", "code"), [("imap", "AUTHENTICATIONFAILED"), ("pop3", "AUTH")])
def test_a_mailbox_server_echoing_the_credentials_is_not_quoted(
    tmp_path: Path, protocol: str, code: str
) -> None:
    session_class = ImapSession if protocol == "imap" else Pop3Session
    with EchoServer(protocol) as server:
        account = _account(protocol, server.port, tmp_path)
        with pytest.raises(AuthError) as info:
            session_class.connect(account, SecretStr(PASSWORD))
    assert server.refusals == 1
    assert str(info.value) == f"echo: {FIXED_REFUSAL} [{code}]"
    sweep("the error", f"{info.value!s} {info.value!r}", leak_forms("alice", PASSWORD))


def test_an_smtp_server_echoing_the_credentials_is_not_quoted(tmp_path: Path) -> None:
    with EchoServer("smtp") as server:
        smtp = Smtp.model_validate({
            "host": "127.0.0.1", "port": server.port, "tls": "none",
            "allow_insecure_plaintext": True, "username": "alice", "from": "pm@example.org",
            "password_file": str(secret_file(tmp_path, "smtp", PASSWORD)), "timeout": 10,
        })  # fmt: skip
        mail = build_message(Rendered("s", "t", "<p>h</p>"), "pm@example.org", ["u@example.org"],
                             [], datetime.now(UTC))  # fmt: skip
        with pytest.raises(MailError) as info:
            Mailer(smtp, SecretCache(), local_hostname="client").send(mail)
    assert server.refusals == 1
    assert info.value.reason == "auth"
    assert str(info.value) == f"SMTP 127.0.0.1:{server.port}: {FIXED_REFUSAL} (535)"
    sweep("the error", f"{info.value!s} {info.value!r}", leak_forms("alice", PASSWORD))
