"""Every form RFC 3501 allows for what quotawatch reads is read right, over a real socket, byte by byte too."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime
from typing import Any

import imapclient
import pytest

from quotawatch.errors import ProtocolError
from quotawatch.mail.imap.client import GreetingClient
from quotawatch.mail.imap.session import ImapSession
from quotawatch.mail.imap.wire import header_value
from quotawatch.mail.limits import Guard, LimitExceeded

CAPS = b"IMAP4rev1 LIST-STATUS STATUS=SIZE QUOTA UIDPLUS"
META = [b"RFC822.SIZE", b"INTERNALDATE", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
MSGID = b"Message-ID: <m0@x>\r\n\r\n"
DATE = datetime(2023, 10, 19, 20, 44, 57, tzinfo=UTC)


class ScriptedPeer:
    """A loopback IMAP server that greets, then answers the n-th command with ``answers[n]``
    (``TAG`` replaced by the command's tag), in one write or one byte per write."""

    def __init__(self, answers: list[bytes], *, fragment: bool = False) -> None:
        self.answers = list(answers)
        self.fragment = fragment
        self.commands: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _send(self, conn: socket.socket, data: bytes) -> None:
        if not self.fragment:
            conn.sendall(data)
            return
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, conn.makefile("rb") as lines:
            self._send(conn, b"* OK [CAPABILITY " + CAPS + b"] scripted\r\n")
            for line in lines:
                self.commands.append(line)
                if not self.answers:
                    return
                self._send(conn, self.answers.pop(0).replace(b"TAG", line.split()[0]))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture(params=[False, True], ids=["whole", "fragmented"])
def fragment(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def session(peer: ScriptedPeer) -> ImapSession:
    client = GreetingClient(
        "127.0.0.1",
        guard=Guard(5, 5, 30),
        port=peer.port,
        ssl=False,
        timeout=imapclient.SocketTimeout(5, 5),
    )
    return ImapSession("acct", client)


def fetch(answer: bytes | list[bytes], uids: list[int], items: list[bytes], fragment: bool) -> Any:
    peer = ScriptedPeer(answer if isinstance(answer, list) else [answer], fragment=fragment)
    try:
        return session(peer)._fetch(uids, items)
    finally:
        peer.close()


def meta(uid: int) -> dict[bytes, Any]:
    return {b"UID": uid, b"RFC822.SIZE": 81, b"INTERNALDATE": DATE,
            b"BODY[HEADER.FIELDS (MESSAGE-ID)]": MSGID}  # fmt: skip


FORMS = {
    "dovecot": b'* 1 FETCH (UID 5 RFC822.SIZE 81 INTERNALDATE "19-Oct-2023 22:44:57 +0200" '
    b"BODY[HEADER.FIELDS (MESSAGE-ID)] {22}\r\n" + MSGID + b")\r\nTAG OK Fetch completed.\r\n",
    "quoted field names": b'* 1 FETCH (UID 5 RFC822.SIZE 81 INTERNALDATE "19-Oct-2023 22:44:57 '
    b'+0200" BODY[HEADER.FIELDS ("MESSAGE-ID")] {22}\r\n' + MSGID + b")\r\nTAG OK done\r\n",
    "lower case atoms": b'* 1 fetch (uid 5 rfc822.size 81 internaldate "19-Oct-2023 22:44:57 '
    b'+0200" body[header.fields (message-id)] {22}\r\n' + MSGID + b")\r\nTAG ok done\r\n",
    "strings as literals": b"* 1 FETCH (UID 5 RFC822.SIZE 81 INTERNALDATE {26}\r\n"
    b"19-Oct-2023 22:44:57 +0200 BODY[HEADER.FIELDS (MESSAGE-ID)] {22}\r\n"
    + MSGID + b")\r\nTAG OK done\r\n",
    "other order": b"* 1 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID)] {22}\r\n" + MSGID
    + b' INTERNALDATE "19-Oct-2023 22:44:57 +0200" RFC822.SIZE 81 UID 5)\r\nTAG OK done\r\n',
    "flags first, then the data": b"* 1 FETCH (UID 5 FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS ())\r\n"
    b'* 1 FETCH (UID 5 RFC822.SIZE 81 INTERNALDATE "19-Oct-2023 22:44:57 +0200" '
    b"BODY[HEADER.FIELDS (MESSAGE-ID)] {22}\r\n" + MSGID + b")\r\nTAG OK done\r\n",
    "UID in a flag list": b"* 1 FETCH (UID 5 FLAGS (UID 9) RFC822.SIZE 81 BODY[HEADER.FIELDS "
    b'(MESSAGE-ID)] {22}\r\n' + MSGID + b' INTERNALDATE "19-Oct-2023 22:44:57 +0200")\r\n'
    b"TAG OK done\r\n",
}  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
def test_every_fetch_form_gives_the_same_data(form: str, fragment: bool) -> None:
    got = fetch(FORMS[form], [5, 9], META, fragment)
    assert got == {5: meta(5)}
    assert header_value(got[5][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"], "Message-ID") == "<m0@x>"


def test_a_fetch_that_cannot_be_placed_is_an_error_not_an_absent_message() -> None:
    answer = b"* 1 FETCH (UID 5 FLAGS (\\Seen))\r\nTAG OK done\r\n"  # none of the items asked
    with pytest.raises(ProtocolError, match="UID 5 lacks"):
        fetch(answer, [5], META, False)


def test_fetch_data_without_a_uid_is_an_error_but_a_flag_change_is_not() -> None:
    """Data asked for in a response without UID cannot be placed; FLAGS (and MODSEQ) alone are
    another client's change (RFC 3501 7.4.2) and skipped."""
    answer = (
        b'* 1 FETCH (RFC822.SIZE 81 INTERNALDATE "19-Oct-2023 22:44:57 +0200")\r\nTAG OK done\r\n'
    )
    with pytest.raises(ProtocolError, match=r"RFC822\.SIZE without a UID"):
        fetch(answer, [5], META[:2], False)
    flags = b"* 2 FETCH (FLAGS (\\Seen))\r\n* 1 FETCH (UID 5 RFC822.SIZE 81 INTERNALDATE "
    flags += b'"19-Oct-2023 22:44:57 +0200")\r\nTAG OK done\r\n'
    got = fetch(flags, [5], META[:2], False)
    assert got == {5: {b"UID": 5, b"RFC822.SIZE": 81, b"INTERNALDATE": DATE}}


def test_a_body_may_be_as_large_as_its_size_plus_slack_and_no_larger() -> None:
    size = b"* 1 FETCH (UID 5 RFC822.SIZE 3)\r\nTAG OK done\r\n"
    body = b"* 1 FETCH (UID 5 BODY[] {3}\r\nabc)\r\nTAG OK done\r\n"
    got = fetch([size, body], [5], [b"BODY.PEEK[]"], False)  # RFC822.SIZE first, then BODY[]
    assert got == {5: {b"UID": 5, b"BODY[]": b"abc"}}
    huge = b"* 1 FETCH (UID 5 BODY[] {2000000}\r\n"
    with pytest.raises(LimitExceeded, match="literal of 2000000 bytes"):
        fetch([size, huge], [5], [b"BODY.PEEK[]"], False)


def folders(answer: bytes, fragment: bool = False) -> dict[str, tuple[int, int, str | None]]:
    peer = ScriptedPeer([answer], fragment=fragment)
    try:
        got = session(peer).folders()
    finally:
        peer.close()
    return {f.name: (f.messages, f.size_bytes, f.special_use) for f in got}


def test_list_status_with_extended_items_literals_and_odd_case(fragment: bool) -> None:
    answer = (
        b'* LIST (\\HasNoChildren) "/" inbox\r\n* STATUS "INBOX" (MESSAGES 2 SIZE 100)\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent ("OLDNAME" ("Sent Items"))\r\n'
        b"* STATUS Sent (messages 1 size 50)\r\n"
        b'* list (\\HasNoChildren \\Trash) "/" {5}\r\nTrash\r\n'
        b"* STATUS {5}\r\nTrash (MESSAGES 3 SIZE 30)\r\n"
        b'* LIST (\\Noselect) "/" Archive\r\n'
        b"TAG OK List completed.\r\n"
    )
    assert folders(answer, fragment) == {
        "INBOX": (2, 100, None),
        "Sent": (1, 50, "\\Sent"),
        "Trash": (3, 30, "\\Trash"),
    }


def test_list_status_in_dovecot_form_takes_the_fast_path_with_the_same_result() -> None:
    answer = (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n* STATUS INBOX (MESSAGES 2 SIZE 100)\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n* STATUS Sent (MESSAGES 1 SIZE 50)\r\n'
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n* STATUS Trash (MESSAGES 3 SIZE 30)\r\n'
        b"TAG OK List completed.\r\n"
    )
    assert folders(answer) == {
        "INBOX": (2, 100, None),
        "Sent": (1, 50, "\\Sent"),
        "Trash": (3, 30, "\\Trash"),
    }


def test_quota_with_a_literal_root_and_lower_case_resource() -> None:
    answer = (
        b'* QUOTAROOT INBOX "User quota"\r\n* QUOTA {10}\r\nUser quota (storage 10 1024)\r\n'
        b"TAG OK done\r\n"
    )
    peer = ScriptedPeer([answer])
    try:
        resources, _ = session(peer).quota()
    finally:
        peer.close()
    assert [(q.root, q.resource, q.usage, q.limit) for q in resources] == [
        ("User quota", "STORAGE", 10 * 1024, 1024 * 1024)
    ]
