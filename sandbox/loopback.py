"""Loopback TCP server plumbing, bounded conversations and secret redaction for the test kit."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["CHUNK", "POLL", "Conversation", "LoopbackServer", "redact_command", "shut"]

#: How long blocking socket calls wait before they look at the stop flag and deadlines.
POLL = 0.05
CHUNK = 1 << 16
MAX_LINE = 1 << 16
MAX_LITERAL = 1 << 24
_LITERAL_RE = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")

_POP3_BARE = frozenset(
    b"STAT LIST UIDL QUIT NOOP RSET CAPA STLS AUTH UTF8 LANG LAST USER TOP".split()
)


def redact_command(command: bytes, protocol: str) -> bytes:
    """*command* with passwords and SASL data replaced by ``<redacted>`` (safe to print).

    IMAP: ``LOGIN`` arguments, ``AUTHENTICATE`` initial responses and lines without a
    tag (SASL responses; ``DONE`` is kept). POP3: ``PASS``/``APOP`` arguments, ``AUTH``
    initial responses and lone words that are no POP3 command (SASL responses).
    """
    words = command.split(None, 3)
    if not words:
        return command
    if protocol == "imap":
        if len(words) == 1:
            return command if words[0].upper() == b"DONE" else b"<redacted>"
        verb = words[1].upper()
        if verb == b"LOGIN":
            return words[0] + b" LOGIN <redacted>"
        if verb == b"AUTHENTICATE" and len(words) > 3:
            return b" ".join(words[:3]) + b" <redacted>"
        return command
    verb = words[0].upper()
    if verb in (b"PASS", b"APOP"):
        return words[0] + b" <redacted>"
    if verb == b"AUTH" and len(words) > 2:
        return b" ".join(words[:2]) + b" <redacted>"
    if len(words) == 1 and verb not in _POP3_BARE:
        return b"<redacted>"
    return command


def shut(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """shutdown() that ignores sockets which are already gone."""
    with contextlib.suppress(OSError):
        sock.shutdown(how)


class LoopbackServer:
    """Listens on 127.0.0.1 (free port) and serves each connection in a daemonic thread.

    At most ``max_connections`` connections are served at once (more are closed at
    once); nothing is accepted after ``lifetime`` seconds. :meth:`close` stops
    accepting, shuts every tracked socket down and joins the threads (bounded).
    Subclasses implement :meth:`_serve`; ``accepted`` counts served connections.
    """

    host = "127.0.0.1"

    def __init__(self, *, max_connections: int, lifetime: float) -> None:
        self.port = 0
        self.accepted = 0
        self.max_connections = max_connections
        self.lifetime = lifetime
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = 0.0
        self._active = 0
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    def start(self) -> Self:
        if self._listener is None:
            self._listener = socket.create_server((self.host, 0), backlog=16)
            self._listener.settimeout(POLL)
            self.port = self._listener.getsockname()[1]
            self._deadline = time.monotonic() + self.lifetime
            self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            shut(sock)
        deadline = time.monotonic() + 5.0
        for thread in list(self._threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self, sock: socket.socket, number: int) -> None:
        raise NotImplementedError

    def _spawn(self, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def _track(self, sock: socket.socket) -> None:
        """Have :meth:`close` shut *sock* down (it must be untracked when closed)."""
        with self._lock:
            self._socks.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        sock.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                full = self._active >= self.max_connections
                if not full:
                    self._active += 1
                    self.accepted += 1
                    self._socks.add(sock)
            if full:
                sock.close()
            else:
                self._spawn(self._run, sock, self.accepted)

    def _run(self, sock: socket.socket, number: int) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(POLL)
            self._serve(sock, number)
        except OSError:
            pass
        finally:
            self._untrack(sock)
            with self._lock:
                self._active -= 1


class Conversation:
    """Bounded reads and writes on one connection, for fake servers.

    Every call gives up when *stop* is set or ``max_seconds`` have passed since the
    start; ``slow`` (trickle) sends one byte per ``trickle_interval``; :meth:`stream`
    sends at most ``max_bytes`` per call; ``on_sent`` is told every byte count sent.
    """

    def __init__(
        self,
        sock: socket.socket,
        stop: threading.Event,
        *,
        max_seconds: float,
        max_bytes: int,
        trickle_interval: float = 1.0,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.sock = sock
        self.stop = stop
        self.deadline = time.monotonic() + max_seconds
        self.max_bytes = max_bytes
        self.trickle_interval = trickle_interval
        self.on_sent = on_sent
        self.buf = bytearray()
        self.sent = 0
        self.slow = False

    def alive(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def send(self, data: bytes) -> bool:
        """Send all of *data*; False if the client is gone or time is up."""
        step = 1 if self.slow else CHUNK
        for i in range(0, len(data), step):
            if self.slow and self.stop.wait(self.trickle_interval):
                return False
            view = memoryview(data[i : i + step])
            while view:
                if not self.alive():
                    return False
                try:
                    n = self.sock.send(view)
                except TimeoutError:
                    continue
                except OSError:
                    return False
                view = view[n:]
                self.sent += n
                if self.on_sent is not None:
                    self.on_sent(n)
        return True

    def stream(self, make: Callable[[int], bytes]) -> None:
        """Send make(0), make(1), ... until ``max_bytes`` more are out, then stop."""
        end = self.sent + self.max_bytes
        for i in range(self.max_bytes // 2 + 1):
            room = end - self.sent
            if room <= 0 or not self.send(make(i)[:room]):
                return

    def _fill(self) -> bool | None:
        """True: got data; False: EOF or error; None: nothing within the poll interval."""
        try:
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            return None
        except OSError:
            return False
        self.buf += data
        return bool(data)

    def read_line(self) -> bytes | None:
        """The next line with its line end; None at EOF, on timeout or if over MAX_LINE."""
        while self.alive():
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > MAX_LINE or self._fill() is False:
                return None
        return None

    def read_exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self.alive() or self._fill() is False:
                return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_imap_command(self) -> bytes | None:
        """A whole IMAP command with its literals (``+ Ready`` sent for synchronizing ones)."""
        parts: list[bytes] = []
        for _ in range(64):
            line = self.read_line()
            if line is None:
                return None
            parts.append(line)
            match = _LITERAL_RE.search(line)
            if match is None:
                return b"".join(parts).removesuffix(b"\n").removesuffix(b"\r")
            size = int(match[1])
            if size > MAX_LITERAL or (not match[2] and not self.send(b"+ Ready\r\n")):
                return None
            literal = self.read_exact(size)
            if literal is None:
                return None
            parts.append(literal)
        return None

    def idle(self) -> None:
        """Swallow input until the client leaves, the server stops or the deadline passes."""
        while self.alive() and self._fill() is not False:
            self.buf.clear()
