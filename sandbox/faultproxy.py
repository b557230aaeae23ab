"""A fault-injecting TCP proxy on 127.0.0.1 that cuts, trickles or fragments IMAP and POP3 talk.

The proxy splits the client's stream into commands (CRLF lines; for IMAP with their
``{n}`` / ``{n+}`` literals) and counts every line the client sends on its own,
including SASL responses and IDLE's ``DONE``. ``cut_after_command=N`` forwards the
Nth command, swallows the server's answer (the server still executes it) and then
closes both sides, so the client sees EOF instead of the reply; ``cut_before_command=N``
closes both sides without forwarding the Nth command; ``match=b"UID EXPUNGE"`` cuts after
the first command containing those bytes. ``hold=b"UID STORE"`` forwards the first command
containing those bytes and holds the server's answer (and all that follows) back from the
client until :meth:`FaultProxy.release`; ``held`` is set once that command went to the
server, so a test can act while the client waits inside it. ``trickle`` (seconds per byte) and
``fragment`` (one byte per send, TCP_NODELAY) slow or split the server->client stream.
Faults apply only to connection number ``connection`` (1-based, default 1, ``None``:
every connection); the others pass through untouched, so "the next run" works.
After STARTTLS/STLS/COMPRESS the stream is opaque and no longer counted;
``protocol="raw"`` parses nothing (for implicit-TLS ports: fragment/trickle only).
Recorded commands are redacted (no passwords, no SASL data); nothing is printed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sandbox.loopback import POLL, LoopbackServer, redact_command, shut

__all__ = ["FaultProxy", "ProxyConnection", "each_cut"]

_LITERAL_RE = re.compile(rb"\{(\d{1,20})\+?\}\r?\n\Z")
_IMAP_ENDS = frozenset({b"OK", b"NO", b"BAD"})
_MAX_LINE = 1 << 20  # a longer "line" ends the parsing: the rest passes through uncounted
_RECORD_CAP = 1 << 16  # bytes of one command kept in ``commands``


@dataclass
class _Piece:
    data: bytes
    first: bool  # starts a new command
    unit: bytes | None  # the whole command (without its final CRLF) when this piece ends it


class _Splitter:
    """Cuts a byte stream into units: CRLF lines, for IMAP together with their literals."""

    def __init__(self, protocol: str, *, client: bool) -> None:
        self.imap = protocol == "imap"
        self.client = client
        self.opaque = protocol == "raw"
        self._buf = bytearray()
        self._unit = bytearray()
        self._literal = 0
        self._in_unit = False

    def _emit(self, data: bytes, *, ends: bool) -> _Piece:
        first = not self._in_unit
        if len(self._unit) < _RECORD_CAP:
            self._unit += data[: _RECORD_CAP - len(self._unit)]
        unit = None
        if ends:
            unit = bytes(self._unit)
            unit = unit[:-2] if unit.endswith(b"\r\n") else unit[:-1]
            self._unit.clear()
        self._in_unit = not ends
        return _Piece(data, first, unit)

    def _switches(self, unit: bytes) -> bool:
        words = unit.upper().split()
        if self.imap:
            return len(words) > 1 and words[1] in (b"STARTTLS", b"COMPRESS")
        return bool(words) and words[0] == b"STLS"

    def feed(self, data: bytes) -> list[_Piece]:
        if self.opaque:
            return [_Piece(data, False, None)]
        self._buf += data
        pieces: list[_Piece] = []
        while self._buf:
            if self.opaque:
                pieces.append(_Piece(bytes(self._buf), False, None))
                self._buf.clear()
            elif self._literal:
                chunk = bytes(self._buf[: self._literal])
                del self._buf[: len(chunk)]
                self._literal -= len(chunk)
                pieces.append(self._emit(chunk, ends=False))
            elif (end := self._buf.find(b"\n")) >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                match = _LITERAL_RE.search(line) if self.imap else None
                if match:
                    self._literal = int(match[1])
                pieces.append(self._emit(line, ends=match is None))
                unit = pieces[-1].unit
                if unit is not None and self.client and self._switches(unit):
                    self.opaque = True
            elif len(self._buf) > _MAX_LINE:  # no protocol any more: pass it through
                self.opaque = True
                pieces.append(self._emit(bytes(self._buf), ends=False))
                self._buf.clear()
            else:
                break
        return pieces


@dataclass
class ProxyConnection:
    """What the proxy saw on one client connection; ``commands`` are redacted."""

    number: int
    faulted: bool
    commands: list[bytes] = field(default_factory=list)
    cut: str | None = None  # "after" or "before"
    cut_command: bytes | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    closed: threading.Event = field(default_factory=threading.Event)


class _Link:
    def __init__(self, info: ProxyConnection, client: socket.socket, upstream: socket.socket):
        self.info = info
        self.client = client
        self.upstream = upstream
        self.cutting = threading.Event()  # set before the cut command is forwarded
        self.holding = threading.Event()  # set before the held command is forwarded
        self.dead = threading.Event()
        self.tag = b""  # IMAP tag whose completion ends the swallowing
        self.active = time.monotonic()

    def kill(self) -> None:
        self.dead.set()
        shut(self.client)
        shut(self.upstream)


class FaultProxy(LoopbackServer):
    """A proxy from ``127.0.0.1:port`` to the upstream server; see the module docstring.

    ``settle`` (default) keeps the client waiting until the server has answered the
    cut command (at most ``settle_timeout`` s), so the server is done when the client
    sees EOF; without it the client is dropped at once. A connection quiet for
    ``idle_timeout`` s is closed.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        protocol: str = "imap",
        cut_after_command: int | None = None,
        cut_before_command: int | None = None,
        match: bytes | None = None,
        hold: bytes | None = None,
        connection: int | None = 1,
        trickle: float | None = None,
        fragment: bool = False,
        settle: bool = True,
        settle_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        max_connections: int = 64,
        lifetime: float = 600.0,
    ) -> None:
        super().__init__(max_connections=max_connections, lifetime=lifetime)
        if protocol not in ("imap", "pop3", "raw"):
            raise ValueError(f"protocol must be imap, pop3 or raw, not {protocol!r}")
        cuts = [c for c in (cut_after_command, cut_before_command, match) if c is not None]
        if len(cuts) > 1 or (cuts and protocol == "raw"):
            raise ValueError("choose at most one of cut_after_command, cut_before_command, match")
        if hold is not None and (cuts or protocol == "raw"):
            raise ValueError("hold goes with no cut, and not with protocol raw")
        if any(n is not None and n < 1 for n in (cut_after_command, cut_before_command)):
            raise ValueError("command numbers start at 1")
        self.upstream = (upstream_host, upstream_port)
        self.protocol = protocol
        self.cut_after_command = cut_after_command
        self.cut_before_command = cut_before_command
        self.match = match
        self.hold = hold
        #: set once the first command containing ``hold`` was forwarded to the server
        self.held = threading.Event()
        self._released = threading.Event()
        self.connection = connection
        self.trickle = trickle
        self.fragment = fragment or trickle is not None
        self.settle = settle
        self.settle_timeout = settle_timeout
        self.idle_timeout = idle_timeout
        self.connections: list[ProxyConnection] = []

    @property
    def commands(self) -> list[bytes]:
        """Every (redacted) client command, connection after connection, in order."""
        infos = sorted(self.connections, key=lambda i: i.number)
        return [command for info in infos for command in list(info.commands)]

    @property
    def cut_happened(self) -> bool:
        return any(info.cut for info in list(self.connections))

    @property
    def cut_command(self) -> bytes | None:
        """The (redacted) command at which a connection was cut, if any."""
        return next((i.cut_command for i in list(self.connections) if i.cut), None)

    def release(self) -> None:
        """Deliver the held answer and everything after it; no further holds."""
        self._released.set()

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Wait until every connection accepted so far is closed on both sides."""
        deadline = time.monotonic() + timeout
        while len(self.connections) < self.accepted and time.monotonic() < deadline:
            time.sleep(POLL)  # accepted, but its thread has not registered it yet
        infos = list(self.connections)
        return all(i.closed.wait(max(0.0, deadline - time.monotonic())) for i in infos)

    # ------------------------------------------------------------------ machinery

    def _serve(self, sock: socket.socket, number: int) -> None:
        faulted = self.connection is None or number == self.connection
        info = ProxyConnection(number, faulted)
        self.connections.append(info)
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            info.closed.set()
            return
        self._track(upstream)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.settimeout(POLL)
        link = _Link(info, sock, upstream)
        pump_up = self._spawn(self._pump_up, link)
        try:
            self._pump_down(link)
        finally:
            link.kill()
            pump_up.join(timeout=5.0)
            self._untrack(upstream)
            info.closed.set()

    def _running(self, link: _Link) -> bool:
        now = time.monotonic()
        return (
            not self._stop.is_set()
            and not link.dead.is_set()
            and now < self._deadline
            and now - link.active < self.idle_timeout
        )

    def _recv(self, link: _Link, sock: socket.socket) -> bytes | None:
        """Data, b"" at EOF or on error, None after a quiet poll interval."""
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""
        link.active = time.monotonic()
        return data

    def _send(self, link: _Link, sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if not self._running(link):
                raise ConnectionAbortedError("proxy connection stopped")
            try:
                view = view[sock.send(view) :]
            except TimeoutError:
                continue
            link.active = time.monotonic()

    def _cuts_after(self, number: int, unit: bytes) -> bool:
        if self.match is not None:
            return self.match in unit
        return number == self.cut_after_command

    def _pump_up(self, link: _Link) -> None:
        """Client -> server: split into commands, count them, cut where told."""
        info = link.info
        splitter = _Splitter(self.protocol, client=True)
        number = 0
        last_tag = b""
        try:
            while self._running(link):
                data = self._recv(link, link.client)
                if data is None:
                    continue
                if not data:
                    shut(link.upstream, socket.SHUT_WR)
                    return
                info.bytes_up += len(data)
                for piece in splitter.feed(data):
                    if piece.first:
                        number += 1
                        if info.faulted and number == self.cut_before_command:
                            info.cut_command = redact_command(piece.data.strip(), self.protocol)
                            info.cut = "before"
                            link.kill()
                            return
                    if piece.unit is not None:
                        words = piece.unit.split(None, 1)
                        last_tag = words[0] if len(words) > 1 else last_tag
                        record = redact_command(piece.unit, self.protocol)
                        info.commands.append(record)
                        if info.faulted and self._cuts_after(number, piece.unit):
                            link.tag = last_tag
                            info.cut_command, info.cut = record, "after"
                            link.cutting.set()  # before forwarding: no reply can slip through
                            self._send(link, link.upstream, piece.data)
                            if not self.settle:
                                shut(link.client)
                            return
                        if self._holds(info, piece.unit):
                            link.holding.set()  # before forwarding: the answer must wait
                            self._send(link, link.upstream, piece.data)
                            self.held.set()
                            continue
                    self._send(link, link.upstream, piece.data)
        except OSError:
            link.kill()

    def _holds(self, info: ProxyConnection, unit: bytes) -> bool:
        return (
            info.faulted and self.hold is not None and not self.held.is_set() and self.hold in unit
        )

    def _answers(self, link: _Link, unit: bytes) -> bool:
        """Whether *unit* from the server completes the cut command."""
        if self.protocol != "imap" or unit.startswith(b"+"):
            return True
        words = unit.split(None, 2)
        return len(words) > 1 and words[0] == link.tag and words[1].upper() in _IMAP_ENDS

    def _pump_down(self, link: _Link) -> None:
        """Server -> client: deliver (trickled, fragmented), or swallow the cut command's answer."""
        splitter = None
        if link.info.faulted and self.protocol != "raw":
            splitter = _Splitter(self.protocol, client=False)
        swallow_until = None
        while self._running(link):
            data = self._recv(link, link.upstream)
            if link.cutting.is_set():  # checked after recv: this data may answer the cut
                now = time.monotonic()
                swallow_until = swallow_until or now + self.settle_timeout
                if now > swallow_until or data == b"":
                    return
            if data is None:
                continue
            if not data:
                shut(link.client, socket.SHUT_WR)
                return
            link.info.bytes_down += len(data)
            if link.holding.is_set():
                while not self._released.wait(POLL):
                    if self._stop.is_set() or link.dead.is_set():
                        return
                link.active = time.monotonic()
            units = splitter.feed(data) if splitter else []
            if not link.cutting.is_set():
                self._deliver(link, data)
            elif any(p.unit is not None and self._answers(link, p.unit) for p in units):
                return

    def _deliver(self, link: _Link, data: bytes) -> None:
        if not (link.info.faulted and self.fragment):
            self._send(link, link.client, data)
            return
        for i in range(len(data)):
            if self.trickle and self._stop.wait(self.trickle):
                raise ConnectionAbortedError("proxy closed")
            self._send(link, link.client, data[i : i + 1])


def each_cut(
    upstream_host: str,
    upstream_port: int,
    *,
    protocol: str = "imap",
    before: bool = False,
    connection: int | None = 1,
    settle_timeout: float = 5.0,
    max_cuts: int = 200,
) -> Iterator[FaultProxy]:
    """One started proxy per cut point 1, 2, ... until a run passes without a cut.

    Connect to ``proxy.port`` in the loop body; after the body the proxy waits for its
    connections to close and, if none was cut, the enumeration ends::

        for proxy in each_cut(dovecot.host, dovecot.imap_port):
            run_quotawatch(port=proxy.port)
            assert_consistent()
    """
    for n in range(1, max_cuts + 1):
        with FaultProxy(
            upstream_host,
            upstream_port,
            protocol=protocol,
            cut_after_command=None if before else n,
            cut_before_command=n if before else None,
            connection=connection,
            settle_timeout=settle_timeout,
        ) as proxy:
            yield proxy
            proxy.wait_closed(timeout=settle_timeout + 5)
            if not proxy.cut_happened:
                return
    raise RuntimeError(f"still cutting after {max_cuts} cut points")
