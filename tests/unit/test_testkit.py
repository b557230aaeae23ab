"""Self-tests of the test kit: the fault-injecting proxy and the hostile fake servers."""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import socket
import time
from collections.abc import Iterator

import pytest

from sandbox.faultproxy import FaultProxy, each_cut
from sandbox.hostile import GARBAGE, HostileServer
from sandbox.loopback import redact_command

HOST = "127.0.0.1"
CAP = 4 << 20  # never read more than this from one socket


def read(sock: socket.socket, *, until: bytes = b"", cap: int = CAP, timeout: float = 5.0) -> bytes:
    """Read until *until* appears (or *cap* bytes, EOF, or *timeout*); never unbounded."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < cap and not (until and until in data):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, cap - len(data)))
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=5)


# A conversation: (bytes to send, what ends the answer). The LOGIN uses a synchronizing
# literal and the STATUS a LITERAL+ one, so the proxy's literal parsing is exercised.
IMAP_SCRIPT = [
    (b"", b"ready.\r\n"),
    (b"a1 CAPABILITY\r\n", b"a1 OK"),
    (b"a2 LOGIN alice {6}\r\n", b"+ Ready\r\n"),
    (b"s3cr3t\r\n", b"a2 OK"),
    (b"a3 GETQUOTAROOT INBOX\r\n", b"a3 OK"),
    (b"a4 STATUS {5+}\r\nINBOX (MESSAGES UIDNEXT)\r\n", b"a4 OK"),
    (b"a5 SELECT INBOX\r\n", b"a5 OK"),
    (b"a6 LOGOUT\r\n", b"a6 OK"),
]
IMAP_COMMANDS = [
    b"a1 CAPABILITY",
    b"a2 LOGIN <redacted>",
    b"a3 GETQUOTAROOT INBOX",
    b"a4 STATUS {5+}\r\nINBOX (MESSAGES UIDNEXT)",
    b"a5 SELECT INBOX",
    b"a6 LOGOUT",
]


def converse(port: int, script: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """Run *script* in lock-step; returns everything the server sent and whether EOF followed."""
    with connect(port) as sock:
        transcript = b""
        for out, end in script:
            if out:
                sock.sendall(out)
            answer = read(sock, until=end, timeout=5)
            transcript += answer
            if end not in answer:
                break
        transcript += read(sock, timeout=0.3)
        sock.settimeout(1)
        try:
            eof = sock.recv(1) == b""
        except TimeoutError:
            eof = False
        return transcript, eof


@pytest.fixture
def imap_server() -> Iterator[HostileServer]:
    with HostileServer("imap") as server:
        yield server


@pytest.fixture
def pop3_server() -> Iterator[HostileServer]:
    with HostileServer("pop3") as server:
        yield server


# ---------------------------------------------------------------------- proxy


def test_proxy_forwards_imap_byte_exactly(imap_server: HostileServer) -> None:
    direct = converse(imap_server.port, IMAP_SCRIPT)
    assert direct[0].endswith(b"a6 OK LOGOUT completed\r\n") and direct[1]
    with FaultProxy(HOST, imap_server.port) as proxy:
        assert converse(proxy.port, IMAP_SCRIPT) == direct
        assert proxy.wait_closed(5)
    assert proxy.commands == IMAP_COMMANDS
    assert not proxy.cut_happened
    assert b"s3cr3t" not in b"".join(proxy.commands + imap_server.commands)


def test_proxy_fragment_and_trickle_deliver_identical_bytes(imap_server: HostileServer) -> None:
    direct, _ = converse(imap_server.port, IMAP_SCRIPT)
    with FaultProxy(HOST, imap_server.port, fragment=True) as proxy:
        assert converse(proxy.port, IMAP_SCRIPT) == (direct, True)
    with FaultProxy(HOST, imap_server.port, trickle=0.002) as proxy:
        started = time.monotonic()
        end = direct.index(b"\r\n", direct.index(b"a1 OK")) + 2
        assert converse(proxy.port, IMAP_SCRIPT[:2])[0] == direct[:end]
        assert time.monotonic() - started >= 0.002 * end


def test_raw_proxy_fragments_implicit_tls() -> None:
    with (
        HostileServer("imap", tls=True) as server,
        FaultProxy(HOST, server.port, protocol="raw", fragment=True) as proxy,
    ):
        client = imaplib.IMAP4_SSL(HOST, proxy.port, ssl_context=server.client_context(), timeout=5)
        client.login("u", "p")
        assert client.noop()[0] == "OK"
        client.logout()
    assert proxy.commands == [] and proxy.connections[0].bytes_down > 0


@pytest.mark.parametrize("n", range(1, 7))
def test_cut_after_command_forwards_n_commands_and_loses_the_reply(
    imap_server: HostileServer, n: int
) -> None:
    with FaultProxy(HOST, imap_server.port, cut_after_command=n) as proxy:
        transcript, eof = converse(proxy.port, IMAP_SCRIPT)
        assert proxy.wait_closed(5)
    tag = IMAP_COMMANDS[n - 1].split()[0]
    assert eof and proxy.cut_happened and proxy.cut_command == IMAP_COMMANDS[n - 1]
    assert imap_server.commands == IMAP_COMMANDS[:n]  # the server did get (and run) it
    assert tag + b" " not in transcript
    assert n == 1 or IMAP_COMMANDS[n - 2].split()[0] + b" OK" in transcript


def test_cut_before_command_forwards_nothing_of_it(imap_server: HostileServer) -> None:
    with FaultProxy(HOST, imap_server.port, cut_before_command=3) as proxy:
        transcript, eof = converse(proxy.port, IMAP_SCRIPT)
        assert proxy.wait_closed(5)
    assert eof and imap_server.commands == IMAP_COMMANDS[:2]
    assert proxy.cut_command == b"a3 GETQUOTAROOT INBOX"
    assert b"a2 OK" in transcript and b"QUOTAROOT" not in transcript


def test_cut_on_match_and_later_connections_pass(imap_server: HostileServer) -> None:
    with FaultProxy(HOST, imap_server.port, match=b"SELECT") as proxy:
        first, _ = converse(proxy.port, IMAP_SCRIPT)
        second, _ = converse(proxy.port, IMAP_SCRIPT)
    assert b"a4 OK" in first and b"a5 " not in first
    assert second.endswith(b"a6 OK LOGOUT completed\r\n")
    assert [c.cut for c in proxy.connections] == ["after", None]
    assert proxy.connections[0].commands == IMAP_COMMANDS[:5]


def test_hold_keeps_the_answer_back_until_released(imap_server: HostileServer) -> None:
    with FaultProxy(HOST, imap_server.port, hold=b"SELECT") as proxy, connect(proxy.port) as sock:
        for out, end in IMAP_SCRIPT[:6]:
            sock.sendall(out)
            assert end in read(sock, until=end)
        sock.sendall(b"a5 SELECT INBOX\r\n")
        assert proxy.held.wait(5)  # forwarded to the server ...
        assert read(sock, timeout=0.3) == b""  # ... and its answer waits
        proxy.release()
        assert b"a5 OK" in read(sock, until=b"a5 OK")
        sock.sendall(b"a6 LOGOUT\r\n")
        assert b"a6 OK" in read(sock, until=b"a6 OK")
    assert not proxy.cut_happened and proxy.commands == IMAP_COMMANDS


def test_each_cut_enumerates_every_imaplib_cut_point(imap_server: HostileServer) -> None:
    outcomes: list[bytes | None] = []
    for proxy in each_cut(HOST, imap_server.port):
        client: imaplib.IMAP4 | None = None
        try:
            client = imaplib.IMAP4(HOST, proxy.port, timeout=5)
            client.login("alice", "pw")
            client.noop()
            client.logout()
            outcomes.append(None)
        except (imaplib.IMAP4.abort, OSError, EOFError):
            outcomes.append(proxy.cut_command)
            if client is not None:
                with contextlib.suppress(OSError):
                    client.shutdown()
    # imaplib sends CAPABILITY, LOGIN, NOOP, LOGOUT: four cut points, then a clean run
    verbs = [b"CAPABILITY", b"LOGIN", b"NOOP", b"LOGOUT", None]
    assert [o and o.split()[1] for o in outcomes] == verbs
    assert outcomes[1] is not None and outcomes[1].endswith(b" LOGIN <redacted>")


def test_pop3_cut_after_pass_with_poplib(pop3_server: HostileServer) -> None:
    with FaultProxy(HOST, pop3_server.port, protocol="pop3", cut_after_command=2) as proxy:
        client = poplib.POP3(HOST, proxy.port, timeout=5)
        client.user("bob")
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            client.pass_("secret")
        client.close()
        assert proxy.wait_closed(5)
        assert proxy.cut_command == b"PASS <redacted>"
        again = poplib.POP3(HOST, proxy.port, timeout=5)
        again.user("bob")
        again.pass_("secret")
        assert again.stat()[0] == 2
        again.quit()
    assert pop3_server.commands[:2] == [b"USER bob", b"PASS <redacted>"]


@pytest.mark.parametrize(
    ("line", "protocol", "safe"),
    [
        (b"a1 LOGIN bob pw", "imap", b"a1 LOGIN <redacted>"),
        (b"a1 AUTHENTICATE PLAIN AGJvYgBwdw==", "imap", b"a1 AUTHENTICATE PLAIN <redacted>"),
        (b"AGJvYgBwdw==", "imap", b"<redacted>"),
        (b"DONE", "imap", b"DONE"),
        (b"PASS pw", "pop3", b"PASS <redacted>"),
        (b"AUTH PLAIN AGJvYgBwdw==", "pop3", b"AUTH PLAIN <redacted>"),
        (b"AGJvYgBwdw==", "pop3", b"<redacted>"),
        (b"UIDL", "pop3", b"UIDL"),
    ],
)
def test_redaction(line: bytes, protocol: str, safe: bytes) -> None:
    assert redact_command(line, protocol) == safe


# ---------------------------------------------------------------------- hostile servers


def imap_login(sock: socket.socket) -> bytes:
    greeting = read(sock, until=b"\r\n")
    sock.sendall(b"a1 LOGIN u p\r\n")
    assert b"a1 OK" in read(sock, until=b"a1 OK")
    return greeting


def test_normal_imap_server_speaks_to_imaplib_plain_and_tls() -> None:
    for tls in (False, True):
        with HostileServer("imap", tls=tls) as server:
            if tls:
                client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    HOST, server.port, ssl_context=server.client_context(), timeout=5
                )
            else:
                client = imaplib.IMAP4(HOST, server.port, timeout=5)
            assert "QUOTA" in client.capabilities
            client.login("anyone", "anything")
            assert client.getquotaroot("INBOX")[1][1] == [b'"User quota" (STORAGE 512 10240)']
            assert client.list()[1] == [b'(\\HasNoChildren) "/" INBOX']
            assert client.status("INBOX", "(MESSAGES UIDNEXT)")[1] == [
                b"INBOX (MESSAGES 0 UIDNEXT 1)"
            ]
            assert client.select("INBOX") == ("OK", [b"0"])
            assert client.logout()[0] == "BYE"
            assert server.connections == 1 and server.bytes_sent > 0


def test_imap_authenticate_plain() -> None:
    with HostileServer("imap") as server:
        client = imaplib.IMAP4(HOST, server.port, timeout=5)
        typ, _ = client.authenticate("PLAIN", lambda _: b"\0bob\0pw")
        assert typ == "OK"
        client.logout()
    assert server.commands[1].split()[1:] == [b"AUTHENTICATE", b"PLAIN"]


def test_imap_huge_literal() -> None:
    with (
        HostileServer("imap", "huge_literal", max_bytes=1 << 20) as server,
        connect(server.port) as sock,
    ):
        imap_login(sock)
        sock.sendall(b"a2 GETQUOTAROOT INBOX\r\n")
        data = read(sock, cap=32 + (1 << 20), timeout=5)
    assert data.startswith(b"* 1 FETCH (BODY[] {4000000000}\r\nAAAA")
    assert len(data) == len(b"* 1 FETCH (BODY[] {4000000000}\r\n") + (1 << 20)


def test_imap_absurd_literal_then_silence() -> None:
    with HostileServer("imap", "absurd_literal") as server, connect(server.port) as sock:
        imap_login(sock)
        sock.sendall(b"a2 NOOP\r\n")
        data = read(sock, timeout=1)
    assert data == b"* 1 FETCH (BODY[] {99999999999999999999}\r\n"


def test_imap_endless_line_on_a_chosen_command() -> None:
    kit = HostileServer("imap", "endless_line", misbehave_on=b"GETQUOTAROOT", max_bytes=3 << 20)
    with kit as server, connect(server.port) as sock:
        imap_login(sock)
        sock.sendall(b"a2 NOOP\r\n")
        assert b"a2 OK" in read(sock, until=b"a2 OK")
        sock.sendall(b"a3 GETQUOTAROOT INBOX\r\n")
        data = read(sock, cap=1 << 20)
    assert data.startswith(b"* OK xxxx") and b"\n" not in data and len(data) == 1 << 20


def test_imap_endless_untagged_never_completes() -> None:
    with HostileServer("imap", "endless_untagged", max_bytes=1 << 20) as server:
        with connect(server.port) as sock:
            imap_login(sock)
            sock.sendall(b"a2 SELECT INBOX\r\n")
            data = read(sock, cap=1 << 20, timeout=5)
            assert read(sock, timeout=0.3) == b""  # max_bytes reached: silence, no completion
        assert set(data.split(b"\r\n")[:-1]) == {b"* 1 EXISTS"} and len(data) == 1 << 20
        assert server.bytes_sent >= 1 << 20


def test_imap_trickle_sends_one_byte_at_a_time() -> None:
    with (
        HostileServer("imap", "trickle", trickle_interval=0.01) as server,
        connect(server.port) as sock,
    ):
        imap_login(sock)
        sock.sendall(b"a2 NOOP\r\n")
        started = time.monotonic()
        sizes = []
        data = b""
        while b"\n" not in data and time.monotonic() - started < 5:
            chunk = sock.recv(100)
            sizes.append(len(chunk))
            data += chunk
    assert data == b"a2 OK NOOP completed\r\n"
    assert max(sizes) <= 2 and time.monotonic() - started >= 0.01 * len(data) * 0.8


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_garbage_greeting(protocol: str) -> None:
    with HostileServer(protocol, "garbage_greeting") as server, connect(server.port) as sock:
        data = read(sock, until=b"\r\n")
    assert data == GARBAGE and not data.startswith((b"* OK", b"+OK"))


def test_greeting_trigger_trickles_the_greeting() -> None:
    kit = HostileServer("pop3", "trickle", misbehave_on="greeting", trickle_interval=0.005)
    with kit as server, connect(server.port) as sock:
        started = time.monotonic()
        assert read(sock, until=b"\r\n") == b"+OK Hostile POP3 ready.\r\n"
    assert time.monotonic() - started >= 0.005 * 20


def test_normal_pop3_server_speaks_to_poplib_plain_and_tls() -> None:
    for tls in (False, True):
        with HostileServer("pop3", tls=tls) as server:
            if tls:
                client: poplib.POP3 = poplib.POP3_SSL(
                    HOST, server.port, context=server.client_context(), timeout=5
                )
            else:
                client = poplib.POP3(HOST, server.port, timeout=5)
            assert "UIDL" in client.capa()
            client.user("anyone")
            client.pass_("anything")
            count, size = client.stat()
            assert count == 2
            assert client.uidl()[1] == [b"1 uid-1", b"2 uid-2"]
            assert sum(int(line.split()[1]) for line in client.list()[1]) == size
            assert client.retr(2)[1][-1] == b".dotted line"
            assert client.top(1, 0)[1] == [b"From: a@example.org", b"Subject: one", b""]
            client.dele(1)
            assert client.stat()[0] == 1
            client.quit()


def test_pop3_endless_multiline() -> None:
    kit = HostileServer("pop3", "endless_multiline", misbehave_on="UIDL", max_bytes=1 << 20)
    with kit as server, connect(server.port) as sock:
        read(sock, until=b"\r\n")
        sock.sendall(b"USER u\r\nPASS p\r\nSTAT\r\n")
        assert read(sock, until=b"+OK 2 ").count(b"+OK") == 3
        sock.sendall(b"UIDL\r\n")
        data = read(sock, cap=1 << 20)
    lines = data.split(b"\r\n")
    assert lines[0] == b"+OK endless listing follows" and len(data) == 1 << 20
    assert b"." not in lines and lines[1:4] == [b"0 0", b"1 1", b"2 2"]


def test_pop3_huge_line() -> None:
    with (
        HostileServer("pop3", "huge_line", max_bytes=1 << 20) as server,
        connect(server.port) as sock,
    ):
        read(sock, until=b"\r\n")
        sock.sendall(b"USER u\r\nPASS p\r\n")
        read(sock, until=b"Logged in.\r\n")
        sock.sendall(b"STAT\r\n")
        data = read(sock, cap=4 + (1 << 20))
    assert data.startswith(b"+OK xxx") and b"\n" not in data and len(data) == 4 + (1 << 20)


def test_close_stops_a_server_streaming_to_a_client_that_does_not_read() -> None:
    server = HostileServer("imap", "endless_untagged").start()
    sock = connect(server.port)
    imap_login(sock)
    sock.sendall(b"a2 NOOP\r\n")
    time.sleep(0.3)
    started = time.monotonic()
    server.close()
    sock.close()
    assert time.monotonic() - started < 3


def test_close_stops_a_trickling_proxy(imap_server: HostileServer) -> None:
    proxy = FaultProxy(HOST, imap_server.port, trickle=10.0).start()
    with connect(proxy.port) as sock:
        assert read(sock, cap=1, timeout=1) == b""
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 3
        assert read(sock, timeout=1) == b""
