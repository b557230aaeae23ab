"""The bounds on one connection: deadlines by an injected clock, caps on lines, literals and answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from quotawatch.mail.limits import (
    MAX_LINES,
    MAX_LITERAL,
    BoundedReader,
    DeadlineExceeded,
    Guard,
    LimitExceeded,
    body_allowance,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


def test_the_next_wait_is_the_shortest_of_read_timeout_command_and_job_deadline() -> None:
    clock = Clock()
    guard = Guard(60, 10, 25, clock=clock)
    assert guard.timeout() == 10
    clock.now += 4
    assert guard.timeout() == 6
    clock.now += 6
    with pytest.raises(DeadlineExceeded, match=r"command_timeout \(10 s\)"):
        guard.timeout()
    guard.start_command()  # a new command: a new command deadline, the same job deadline
    assert guard.timeout() == 10
    clock.now += 9
    assert guard.timeout() == 1
    guard.start_command()
    assert guard.timeout() == 6  # the job ends first now
    clock.now += 6
    with pytest.raises(DeadlineExceeded, match=r"account job took longer than job_timeout"):
        guard.timeout()
    assert Guard(5, 100, 100, clock=clock).timeout() == 5  # a silent server: the read timeout


def test_a_socket_timeout_cut_short_by_a_deadline_names_that_deadline() -> None:
    guard = Guard(60, 10, 25, clock=Clock())
    assert guard.timed_out(60) is None  # the server was silent for the whole read timeout
    assert str(guard.timed_out(10)).startswith("one command took longer than command_timeout")
    later = Guard(60, 10, 5, clock=Clock())
    assert "job_timeout" in str(later.timed_out(5))


def test_literal_caps_and_a_body_allowance() -> None:
    guard = Guard(60, 60, 60, clock=Clock())
    guard.line(b"* 1 FETCH (BODY[HEADER.FIELDS (DATE)] {%d}\r\n" % MAX_LITERAL)
    with pytest.raises(LimitExceeded, match="literal of 4000000000 bytes"):
        guard.line(b"* 1 FETCH (BODY[] {4000000000}\r\n")
    with pytest.raises(LimitExceeded, match="literal of 99999999999999999999 bytes"):
        guard.line(b"* 1 FETCH (BODY[] {99999999999999999999}\r\n")
    with pytest.raises(LimitExceeded, match="literal of 9999999999999999"):
        guard.line(b"{" + b"9" * 5000 + b"}\r\n")  # refused before int() of 5,000 digits
    guard.expect_body(body_allowance(3_000_000))
    assert guard.literal(3_500_000) == 3_500_000
    with pytest.raises(LimitExceeded):
        guard.literal(body_allowance(3_000_000) + 1)
    guard.start_command()  # the allowance was for that command only
    with pytest.raises(LimitExceeded):
        guard.literal(MAX_LITERAL + 1)


def test_lines_of_one_answer_are_capped_and_counted_afresh_per_command() -> None:
    guard = Guard(60, 60, 60, clock=Clock())
    for _ in range(MAX_LINES):
        guard.line(b"* 1 EXISTS\r\n")
    with pytest.raises(LimitExceeded, match=f"more than {MAX_LINES} lines"):
        guard.line(b"* 1 EXISTS\r\n")
    guard.start_command()
    guard.line(b"* 1 EXISTS\r\n")


def test_reader_refuses_a_long_line_and_reads_a_literal_exactly(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    reader = BoundedReader(ours, Guard(5, 5, 5), max_line=16)
    theirs.sendall(b"* OK {3}\r\nabc\r\n" + b"x" * 40)
    assert reader.readline() == b"* OK {3}\r\n"
    assert reader.read(3) == b"abc"
    assert reader.readline() == b"\r\n"
    with pytest.raises(LimitExceeded, match="line longer than 16 bytes"):
        reader.readline()


def test_reader_gives_up_at_the_command_deadline_when_the_server_trickles(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    reader = BoundedReader(ours, Guard(30, 0.3, 30))
    theirs.sendall(b"* O")  # then nothing: each byte would reset a per-read timeout
    with pytest.raises(DeadlineExceeded, match="command_timeout"):
        reader.readline()
