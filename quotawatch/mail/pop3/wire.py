"""The POP3 wire: a poplib client with verified TLS and SASL PLAIN, error mapping, and pure response parsers."""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import email.utils
import poplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from quotawatch.errors import (
    AuthError,
    CredentialsNotSent,
    LoginRefused,
    MailboxError,
    ProtocolError,
    TemporaryServerError,
    transport_error,
)
from quotawatch.mail.limits import (
    BoundedReader,
    BoundExceeded,
    Guard,
    bound_error,
    drop,
    start_send,
)

#: Longest response line accepted. poplib's own limit (2048) is below real-world mail, whose
#: lines a RETR for an archive copy must pass through unchanged.
MAX_LINE = 1024 * 1024
#: RFC 2449/3206 response codes meaning "not now": retry at the next scheduled run.
TEMPORARY_CODES = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP"})
_CODE = re.compile(r"^-ERR\s*\[([A-Za-z0-9/-]+)\]")


class Pop3Client(poplib.POP3):
    """poplib's POP3 with implicit TLS by context, STLS, raw short/long commands and long lines.

    Every read (the greeting too) goes through a :class:`BoundedReader`: lines, the lines and
    bytes of one answer are capped and each receive is bound by ``guard``'s deadlines; passing
    a bound drops the connection (so no QUIT can follow, and nothing marked is deleted)."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        implicit_tls: ssl.SSLContext | None,
        guard: Guard,
    ) -> None:
        self._implicit_tls = implicit_tls
        self.guard = guard
        self.guard.start_command()  # the greeting is the first answer
        self._reader: BoundedReader | None = None
        super().__init__(host, port, timeout)
        self._debugging = 0  # poplib's debug output would print AUTH and PASS lines

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        if self._implicit_tls is None:
            return sock
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _bounded(self) -> BoundedReader:
        reader = self._reader
        if reader is None or reader.sock is not self.sock:  # a new socket after STLS
            reader = self._reader = BoundedReader(self.sock, self.guard, MAX_LINE)
        return reader

    def _getline(self) -> tuple[bytes, int]:
        try:
            line = self._bounded().readline()
        except BoundExceeded:
            drop(self.sock)
            raise
        if not line:
            raise EOFError("the server closed the connection")
        if line.endswith(b"\r\n"):
            return line[:-2], len(line)
        if line.startswith(b"\r"):
            return line[1:-1], len(line)
        return line[:-1], len(line)

    def _put(self, data: bytes) -> None:
        try:
            wait = start_send(self.sock, self.guard)
            try:
                self.sock.sendall(data)
            except TimeoutError:
                raise self.guard.timed_out(wait) or TimeoutError("timed out") from None
        except BoundExceeded:
            drop(self.sock)
            raise

    def _putline(self, line: bytes) -> None:
        """poplib's commands (USER, PASS, STAT, DELE, QUIT) go out here."""
        self._put(line + b"\r\n")

    def send(self, line: str) -> None:
        """Send one command line (never logged anywhere)."""
        self._put(line.encode("utf-8") + b"\r\n")

    def short(self, line: str) -> bytes:
        """Send a command, return its +OK (or SASL ``+``) line; raise error_proto on -ERR."""
        self.send(line)
        resp, _ = self._getline()
        if not resp.startswith(b"+"):
            raise poplib.error_proto(resp)
        return resp

    def long(self, line: str, body: int = 0) -> list[bytes]:
        """Send a command with a multi-line answer; return its lines, dot-unstuffed. ``body``:
        the answer may hold a message of this many bytes (RETR) beyond the usual caps."""
        self.short(line)
        if body:
            self.guard.expect_body(body)
        return self._body()

    def long_many(self, lines: Sequence[str]) -> list[list[bytes] | poplib.error_proto]:
        """Send several multi-line commands at once (RFC 2449 PIPELINING); read every answer."""
        self._put(b"".join(line.encode("utf-8") + b"\r\n" for line in lines))
        out: list[list[bytes] | poplib.error_proto] = []
        for _ in lines:
            resp, _ = self._getline()
            out.append(self._body() if resp.startswith(b"+") else poplib.error_proto(resp))
        return out

    def _body(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            data, _ = self._getline()
            if data == b".":
                return lines
            lines.append(data[1:] if data.startswith(b"..") else data)

    def capa(self) -> dict[str, list[str]]:
        """RFC 2449 capabilities; empty if the server has no CAPA."""
        try:
            lines = self.long("CAPA")
        except poplib.error_proto:
            return {}
        caps: dict[str, list[str]] = {}
        for raw in lines:
            words = raw.decode("ascii", "replace").split()
            if words:
                caps[words[0].upper()] = words[1:]
        return caps

    def starttls(self, context: ssl.SSLContext) -> None:
        """STLS, then TLS over the same socket; anything the server sent before is discarded."""
        self.short("STLS")
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")

    def auth_plain(self, user: str, password: str, authzid: str = "") -> None:
        """SASL PLAIN (RFC 5034) with the response after the server's empty challenge."""
        token = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode("ascii")
        challenge = self.short("AUTH PLAIN")
        if challenge.startswith(b"+OK"):
            raise poplib.error_proto(b"-ERR AUTH PLAIN accepted without credentials")
        self.short(token)

    def auth_sasl(self, mechanism: str, respond: Callable[[bytes | None], bytes]) -> None:
        """SASL exchange (RFC 5034) for a client-first mechanism such as XOAUTH2: the response
        goes after the server's empty challenge (a token is longer than an initial response may
        be); later challenges (an error status) are answered as ``respond`` says."""
        resp = self.short(f"AUTH {mechanism}")
        first = True
        for _ in range(4):
            if resp.startswith(b"+OK"):
                if first:
                    raise poplib.error_proto(b"-ERR AUTH accepted without credentials")
                return
            challenge = base64.b64decode(resp[1:].strip()) if resp[1:].strip() else b""
            answer = respond(None if first else challenge)
            first = False
            resp = self.short(base64.b64encode(answer).decode("ascii"))
        raise poplib.error_proto(b"-ERR too many SASL challenges")


def capability_names(caps: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """CAPA as a set of names, SASL mechanisms as ``SASL=PLAIN`` (like IMAP's ``AUTH=PLAIN``)."""
    names = set(caps)
    names.update(f"SASL={m.upper()}" for m in caps.get("SASL", ()))
    return frozenset(names)


def server_words(exc: BaseException) -> str:
    """The server's response line from a poplib error, printable and short."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return "".join(c if c.isprintable() else " " for c in text).strip()[:300]


def server_error(account: str, doing: str, exc: poplib.error_proto, login: bool) -> MailboxError:
    """The MailboxError for a -ERR: temporary codes back off, [AUTH] or a refused login is AuthError."""
    words = server_words(exc)
    match = _CODE.match(words)
    code = match.group(1).upper() if match else ""
    if code in TEMPORARY_CODES:
        return TemporaryServerError(account, f"server busy ({doing}), retry later: {words}")
    if code == "AUTH" or (login and not code):
        return AuthError(account, f"login refused: {words}")
    return ProtocolError(account, f"server refused ({doing}): {words}")


@contextlib.contextmanager
def translate_errors(account: str, doing: str, *, login: bool = False) -> Iterator[None]:
    """Turn socket, TLS and POP3 errors into quotawatch's MailboxError subclasses."""
    try:
        yield
    except MailboxError:
        raise
    except BoundExceeded as exc:
        raise bound_error(account, doing, exc) from None
    except poplib.error_proto as exc:
        raise server_error(account, doing, exc, login) from None
    except (OSError, EOFError) as exc:  # sockets and TLS
        raise transport_error(account, doing, exc) from None
    except (ValueError, IndexError) as exc:
        raise ProtocolError(account, f"unexpected answer ({doing}): {exc}") from None


@contextlib.contextmanager
def login_errors(account: str) -> Iterator[None]:
    """Like :func:`translate_errors` while credentials are on the wire, with fixed messages only
    (a known response code at most): never the library's or the server's words."""
    try:
        yield
    except MailboxError:
        raise
    except BoundExceeded as exc:  # names a size or a timeout, never what was sent
        raise bound_error(account, "login", exc) from None
    except poplib.error_proto as exc:
        refused = LoginRefused(account, server_words(exc))
        if refused.code in TEMPORARY_CODES:
            raise TemporaryServerError(
                account, f"server busy (login), retry later [{refused.code}]"
            ) from None
        raise refused from None
    except (OSError, EOFError) as exc:  # sockets and TLS: the operating system's words
        raise transport_error(account, "login", exc) from None
    except Exception as exc:  # noqa: BLE001 - replaced by a message that cannot hold a secret
        raise CredentialsNotSent(account, exc) from None


@dataclass(frozen=True)
class MessageIndex:
    """The INBOX as POP3 numbers it: UIDL -> (message number, size); ``problem`` makes it read-only."""

    by_uidl: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    problem: str | None = None


def build_index(uidl_lines: Sequence[bytes], list_lines: Sequence[bytes]) -> MessageIndex:
    """Pair UIDL and LIST answers; a duplicate or malformed UIDL gives an index with a problem."""
    sizes: dict[int, int] = {}
    for raw in list_lines:
        parts = raw.split()
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
            return MessageIndex(problem=f"unparseable LIST line {raw[:80]!r}")
        sizes[int(parts[0])] = int(parts[1])
    by_uidl: dict[str, tuple[int, int]] = {}
    duplicates: set[str] = set()
    for raw in uidl_lines:
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdigit():
            return MessageIndex(problem=f"unparseable UIDL line {raw[:80]!r}")
        number, uidl = int(parts[0]), parts[1].decode("latin-1")
        if uidl in by_uidl:
            duplicates.add(uidl)
        if number not in sizes:
            return MessageIndex(problem=f"message {number} is in UIDL but not in LIST")
        by_uidl[uidl] = (number, sizes[number])
    if duplicates:
        sample = ", ".join(sorted(duplicates)[:3])
        return MessageIndex(
            problem=f"the server gives {len(duplicates)} UIDL(s) to more than one message "
            f"(e.g. {sample}); messages cannot be told apart"
        )
    if len(by_uidl) != len(sizes):
        return MessageIndex(problem=f"UIDL lists {len(by_uidl)} messages but LIST {len(sizes)}")
    return MessageIndex(by_uidl)


def parse_headers(lines: Sequence[bytes]) -> tuple[str | None, datetime | None]:
    """Message-ID and Date of a ``TOP n 0`` answer; an unparseable Date is None."""
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        b"\r\n".join(lines) + b"\r\n\r\n"
    )
    message_id = msg.get("Message-ID")
    return (str(message_id).strip() if message_id else None), parse_date(msg.get("Date"))


def parse_date(value: object) -> datetime | None:
    """An RFC 5322 Date as an aware datetime (``-0000`` taken as UTC); None if unparseable."""
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
