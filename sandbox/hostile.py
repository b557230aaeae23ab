"""Hostile fake IMAP and POP3 servers on 127.0.0.1 that let a client log in and then misbehave.

Modes, IMAP: ``normal`` (a minimal valid IMAP4rev1 server), ``huge_literal``
(``* 1 FETCH (BODY[] {4000000000}`` then filler), ``absurd_literal``
(``{99999999999999999999}`` then silence), ``endless_line`` (``* OK xxx...`` without
CRLF), ``endless_untagged`` (``* 1 EXISTS`` forever, never the tagged completion),
``trickle`` (valid answers, one byte per ``trickle_interval``), ``garbage_greeting``.
POP3: ``normal``, ``endless_multiline`` (a listing that never ends with ``.``),
``huge_line`` (``+OK xxx...`` without CRLF), ``trickle``, ``garbage_greeting``.

``misbehave_on`` says when: ``"after-login"`` (the first command after a successful
LOGIN/AUTHENTICATE/PASS/AUTH), ``"greeting"``, or a command such as ``"GETQUOTAROOT"``,
``"UID FETCH"`` or ``"UIDL"``. Endless output stops after ``max_bytes`` per connection;
every connection is closed after ``max_seconds``. Any user and password are accepted
(AUTH=XOAUTH2/OAUTHBEARER are advertised for :mod:`sandbox.expiring`, which accepts them).
``tls=True`` speaks implicit TLS with a certificate from a throw-away ``trustme`` CA
(``ca_file``, or :meth:`HostileServer.client_context`) for ``identities`` (default
``127.0.0.1`` and ``localhost``). ``capabilities``: what the IMAP greeting and login announce.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import tempfile
from pathlib import Path

import trustme

from sandbox.loopback import CHUNK, POLL, Conversation, LoopbackServer, redact_command

__all__ = ["GARBAGE", "IMAP_CAPABILITIES", "IMAP_MODES", "POP3_MODES", "HostileServer"]

IMAP_MODES = frozenset(
    {
        "normal",
        "huge_literal",
        "absurd_literal",
        "endless_line",
        "endless_untagged",
        "trickle",
        "garbage_greeting",
    }
)
POP3_MODES = frozenset({"normal", "endless_multiline", "huge_line", "trickle", "garbage_greeting"})
IMAP_CAPABILITIES = (
    b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ NAMESPACE UIDPLUS QUOTA"
    b" AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER"
)
#: What ``garbage_greeting`` sends: TLS-record-like binary junk, then CRLF.
GARBAGE = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00" + bytes(range(128, 256)) * 4 + b"\r\n"
_MESSAGES = (
    b"From: a@example.org\r\nSubject: one\r\n\r\nFirst.\r\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nSecond.\r\n.dotted line\r\n",
)
_STATUS = {b"MESSAGES": 0, b"RECENT": 0, b"UIDNEXT": 1, b"UIDVALIDITY": 1, b"UNSEEN": 0}
_STATUS |= {b"SIZE": 0, b"DELETED": 0, b"HIGHESTMODSEQ": 1}
_FLAGS = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft"
_SELECTED = (
    b"* FLAGS (%s)\r\n* OK [PERMANENTFLAGS (%s \\*)] Flags permitted.\r\n* 0 EXISTS\r\n"
    b"* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT 1] Predicted next UID\r\n"
) % (_FLAGS, _FLAGS)
#: IMAP commands answered with fixed untagged data (maybe none) and a tagged OK.
_IMAP_FIXED = {
    b"CAPABILITY": b"* CAPABILITY " + IMAP_CAPABILITIES + b"\r\n",
    b"LIST": b'* LIST (\\HasNoChildren) "/" INBOX\r\n',
    b"LSUB": b'* LSUB (\\HasNoChildren) "/" INBOX\r\n',
    b"ID": b'* ID ("name" "hostile")\r\n',
    b"NAMESPACE": b'* NAMESPACE (("" "/")) NIL NIL\r\n',
    b"ENABLE": b"* ENABLED\r\n",
    b"SEARCH": b"* SEARCH\r\n",
} | dict.fromkeys(
    b"NOOP CHECK CLOSE UNSELECT EXPUNGE FETCH STORE COPY MOVE APPEND CREATE SUBSCRIBE".split(), b""
)
_POP3_FIXED = {
    b"CAPA": b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\nRESP-CODES\r\nSASL PLAIN\r\n.\r\n",
    b"USER": b"+OK\r\n",
    b"NOOP": b"+OK\r\n",
}
_MAX_COMMANDS = 10_000


class _Session(Conversation):
    logged_in = False
    triggered = False


class HostileServer(LoopbackServer):
    """A fake IMAP or POP3 server on 127.0.0.1; see the module docstring.

    ``connections`` counts accepted connections, ``bytes_sent`` all bytes written,
    ``commands`` every (redacted) command line received, in order.
    """

    def __init__(
        self,
        protocol: str = "imap",
        mode: str = "normal",
        *,
        misbehave_on: str | bytes = "after-login",
        tls: bool = False,
        trickle_interval: float = 1.0,
        max_bytes: int = 64 << 20,
        max_seconds: float = 30.0,
        max_connections: int = 16,
        lifetime: float = 600.0,
        quota_kib: tuple[int, int] = (512, 10240),
        identities: tuple[str, ...] = ("127.0.0.1", "localhost"),
        capabilities: bytes = IMAP_CAPABILITIES,
    ) -> None:
        super().__init__(max_connections=max_connections, lifetime=lifetime)
        modes = {"imap": IMAP_MODES, "pop3": POP3_MODES}.get(protocol)
        if modes is None or mode not in modes:
            raise ValueError(f"unknown {protocol} mode {mode!r}; choose from {sorted(modes or ())}")
        self.protocol = protocol
        self.mode = mode
        on = misbehave_on.decode() if isinstance(misbehave_on, bytes) else misbehave_on
        self.misbehave_on = on.upper().encode()
        self.tls = tls
        self.trickle_interval = trickle_interval
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.quota_kib = quota_kib
        self.identities = identities
        self.capabilities = capabilities
        self.ca_file: Path | None = None
        self.bytes_sent = 0
        self.commands: list[bytes] = []
        self._context: ssl.SSLContext | None = None
        self._tmp: Path | None = None

    @property
    def connections(self) -> int:
        return self.accepted

    def start(self) -> HostileServer:
        if self.tls and self._context is None:
            ca = trustme.CA()
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(*self.identities).configure_cert(self._context)
            self._tmp = Path(tempfile.mkdtemp(prefix="qw-hostile-"))
            self.ca_file = self._tmp / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
        return super().start()

    def close(self) -> None:
        super().close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's throw-away CA (``tls=True`` only)."""
        if self.ca_file is None:
            raise RuntimeError("this HostileServer does not speak TLS (or is not started)")
        return ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------------ machinery

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def _serve(self, sock: socket.socket, number: int) -> None:
        if self._context is None:
            self._converse(sock)
            return
        sock.settimeout(5.0)
        tls = self._context.wrap_socket(sock, server_side=True)
        self._track(tls)  # wrap_socket detached *sock*: close() must shut *tls* down
        try:
            tls.settimeout(POLL)
            self._converse(tls)
        finally:
            self._untrack(tls)

    def _converse(self, sock: socket.socket) -> None:
        s = _Session(
            sock,
            self._stop,
            max_seconds=self.max_seconds,
            max_bytes=self.max_bytes,
            trickle_interval=self.trickle_interval,
            on_sent=self._count,
        )
        if self.protocol == "imap":
            self._serve_imap(s)
        else:
            self._serve_pop3(s)

    def _greet(self, s: _Session, greeting: bytes) -> bool:
        """Send the greeting (or misbehave right away); False: the session is over."""
        if self.mode == "garbage_greeting":
            s.send(GARBAGE)
        elif self.misbehave_on == b"GREETING" and self.mode != "trickle":
            s.triggered = True
            self._misbehave(s)
        else:
            s.slow = s.triggered = self.misbehave_on == b"GREETING"
            return s.send(greeting)
        s.idle()
        return False

    def _triggers(self, s: _Session, command: bytes) -> bool:
        if s.triggered:
            return False
        if self.misbehave_on == b"AFTER-LOGIN":
            s.triggered = s.logged_in
        else:
            s.triggered = (command.upper() + b" ").startswith(self.misbehave_on + b" ")
        return s.triggered

    def _misbehave(self, s: _Session) -> None:
        mode = self.mode
        if mode == "huge_literal":
            s.send(b"* 1 FETCH (BODY[] {4000000000}\r\n")
            s.stream(lambda i: b"A" * CHUNK)
        elif mode == "absurd_literal":
            s.send(b"* 1 FETCH (BODY[] {99999999999999999999}\r\n")
        elif mode in ("endless_line", "huge_line"):
            s.send(b"* OK " if self.protocol == "imap" else b"+OK ")
            s.stream(lambda i: b"x" * CHUNK)
        elif mode == "endless_untagged":
            s.stream(lambda i: b"* 1 EXISTS\r\n" * 4096)
        elif mode == "endless_multiline":
            s.send(b"+OK endless listing follows\r\n")
            s.stream(
                lambda i: b"".join(b"%d %d\r\n" % (n, n) for n in range(i * 2048, i * 2048 + 2048))
            )

    def _serve_command(self, s: _Session, command: bytes) -> bool:
        """Record *command*; misbehave if it is the trigger. False: the session is over."""
        with self._lock:
            self.commands.append(redact_command(command, self.protocol))
        name = command.partition(b" ")[2] if self.protocol == "imap" else command
        if self.mode == "normal" or not self._triggers(s, name):
            return True
        if self.mode == "trickle":
            s.slow = True
            return True
        self._misbehave(s)
        s.idle()
        return False

    # ------------------------------------------------------------------ IMAP

    def _serve_imap(self, s: _Session) -> None:
        caps = self.capabilities
        if not self._greet(s, b"* OK [CAPABILITY " + caps + b"] Hostile IMAP ready.\r\n"):
            return
        for _ in range(_MAX_COMMANDS):
            command = s.read_imap_command()
            if command is None or not self._serve_command(s, command):
                return
            tag, _, rest = command.partition(b" ")
            words = rest.split(b"\r\n", 1)[0].split()
            upper = [word.upper() for word in words[:2]]
            verb = b" ".join(upper if upper[:1] == [b"UID"] else upper[:1])
            ok = tag + b" OK " + verb + b" completed\r\n"
            name = words[1] if len(words) > 1 else b"INBOX"
            quota = b'* QUOTA "User quota" (STORAGE %d %d)\r\n' % self.quota_kib
            fixed = _IMAP_FIXED.get(verb.removeprefix(b"UID "))
            if verb == b"AUTHENTICATE":
                if self._imap_authenticate(s, tag, words):
                    continue
                return
            if verb == b"LOGOUT":
                s.send(b"* BYE Logging out\r\n" + ok)
                return
            if verb == b"LOGIN":
                s.logged_in = True
                out = tag + b" OK [CAPABILITY " + caps + b"] Logged in\r\n"
            elif verb == b"GETQUOTAROOT":
                out = b'* QUOTAROOT %s "User quota"\r\n' % name + quota + ok
            elif verb == b"CAPABILITY":
                out = b"* CAPABILITY " + caps + b"\r\n" + ok
            elif verb == b"GETQUOTA":
                out = quota + ok
            elif verb == b"STATUS":
                items = re.findall(rb"[A-Z]+", rest.upper().partition(b"(")[2])
                answer = b" ".join(b"%s %d" % (i, _STATUS[i]) for i in items if i in _STATUS)
                out = b"* STATUS %s (%s)\r\n" % (name, answer) + ok
            elif verb in (b"SELECT", b"EXAMINE"):
                access = b"READ-WRITE" if verb == b"SELECT" else b"READ-ONLY"
                out = _SELECTED + b"%s OK [%s] %s completed\r\n" % (tag, access, verb)
            elif fixed is not None:
                out = fixed + ok
            else:
                out = tag + b" BAD Unknown command\r\n"
            if not s.send(out):
                return

    def _imap_authenticate(self, s: _Session, tag: bytes, words: list[bytes]) -> bool:
        mechanism = words[1].upper() if len(words) > 1 else b""
        prompts = {b"PLAIN": [b""], b"LOGIN": [b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"]}.get(mechanism)
        if prompts is None:
            return s.send(tag + b" NO Unsupported mechanism\r\n")
        if len(words) > 2:  # SASL-IR answered the first prompt
            prompts = prompts[1:]
        for prompt in prompts:
            answer = s.read_line() if s.send(b"+ " + prompt + b"\r\n") else None
            if answer is None:
                return False
            if answer.strip() == b"*":
                return s.send(tag + b" BAD Authentication canceled\r\n")
        s.logged_in = True
        return s.send(tag + b" OK [CAPABILITY " + self.capabilities + b"] Logged in\r\n")

    # ------------------------------------------------------------------ POP3

    def _serve_pop3(self, s: _Session) -> None:
        if not self._greet(s, b"+OK Hostile POP3 ready.\r\n"):
            return
        deleted: set[int] = set()
        for _ in range(_MAX_COMMANDS):
            line = s.read_line()
            command = line.rstrip(b"\r\n") if line is not None else None
            if command is None or not self._serve_command(s, command):
                return
            words = command.split()
            verb, args = (words[0].upper(), words[1:]) if words else (b"", [])
            live = [n for n in range(1, len(_MESSAGES) + 1) if n not in deleted]
            number = int(args[0]) if args and args[0].isdigit() else 0
            message = _MESSAGES[number - 1] if number in live else None
            if verb == b"QUIT":
                s.send(b"+OK Bye\r\n")
                return
            if verb in (b"LIST", b"UIDL", b"RETR", b"TOP", b"DELE") and args and message is None:
                out = b"-ERR No such message\r\n"
            elif verb in _POP3_FIXED:
                out = _POP3_FIXED[verb]
            elif verb in (b"PASS", b"AUTH"):
                if not self._pop3_authenticate(s, verb, args):
                    return
                continue
            elif verb == b"STAT":
                out = b"+OK %d %d\r\n" % (len(live), sum(len(_MESSAGES[n - 1]) for n in live))
            elif verb in (b"LIST", b"UIDL"):
                rows = [
                    b"%d %s\r\n"
                    % (n, b"%d" % len(_MESSAGES[n - 1]) if verb == b"LIST" else b"uid-%d" % n)
                    for n in ([number] if args else live)
                ]
                out = b"+OK " + rows[0] if args else b"+OK\r\n" + b"".join(rows) + b".\r\n"
            elif verb in (b"RETR", b"TOP") and message is not None:
                if verb == b"TOP":
                    head, _, body = message.partition(b"\r\n\r\n")
                    lines = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
                    message = b"\r\n".join([head, b"", *body.split(b"\r\n")[:lines]]) + b"\r\n"
                stuffed = re.sub(rb"(?m)^\.", b"..", message)
                out = b"+OK %d octets\r\n%s.\r\n" % (len(message), stuffed)
            elif verb in (b"DELE", b"RSET"):
                deleted = deleted | {number} if verb == b"DELE" else set()
                out = b"+OK\r\n"
            else:
                out = b"-ERR Unknown command\r\n"
            if not s.send(out):
                return

    def _pop3_authenticate(self, s: _Session, verb: bytes, args: list[bytes]) -> bool:
        if verb == b"AUTH" and not args:
            return s.send(b"+OK\r\nPLAIN\r\n.\r\n")
        if verb == b"AUTH" and args[0].upper() != b"PLAIN":
            return s.send(b"-ERR Unsupported mechanism\r\n")
        if verb == b"AUTH" and len(args) < 2:
            answer = s.read_line() if s.send(b"+ \r\n") else None
            if answer is None:
                return False
            if answer.strip() == b"*":
                return s.send(b"-ERR Authentication canceled\r\n")
        s.logged_in = True
        return s.send(b"+OK Logged in.\r\n")
