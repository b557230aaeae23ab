"""The POP3 client guard: min_on_server by first-seen time, and the client's own list of downloaded UIDLs."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from quotawatch.config import Account
from quotawatch.mail.session import Candidate
from quotawatch.units import format_duration

#: Thunderbird status letters of messages whose body is on the user's disk: k = kept on the
#: server, d = to be deleted by the client. b (too big: headers only) and f (body still to be
#: fetched) are partial downloads and therefore not listed as downloaded.
THUNDERBIRD_DOWNLOADED = frozenset("kd")
#: Largest client state file read (a million UIDLs is about 70 MB).
MAX_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class ClientState:
    """The UIDLs a mail client has downloaded, as read from its state file."""

    format: str
    uidls: frozenset[str]

    def has(self, uidl: str) -> bool:
        """Whether the client has this message; getmail stores ``/`` in a UIDL as ``-``."""
        if self.format == "getmail":
            return uidl.replace("/", "-") in self.uidls
        return uidl in self.uidls


@dataclass(frozen=True)
class _Entry:
    owner: tuple[str, str] | None  # (host, user) for formats that hold several accounts
    uidl: str


def read_client_state(path: Path, *, users: Collection[str], host: str) -> ClientState:
    """Parse the file at ``path``; OSError if unreadable, ValueError if not understood."""
    with path.open("rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 2**20} MiB")
    return parse_client_state(data, users=users, host=host)


def parse_client_state(data: bytes, *, users: Collection[str], host: str) -> ClientState:
    """Detect the format and return the UIDLs downloaded by ``users`` (login names) at ``host``.

    Formats holding several accounts (Thunderbird, fetchmail) are narrowed to the entries of
    one of ``users``; entries for that user on several hosts are narrowed to ``host``. Anything
    ambiguous is a ValueError: a wrong list could let another client's downloads count here.
    """
    text = data.decode("latin-1")  # UIDLs are printable ASCII; latin-1 keeps any byte as is
    lines = [line.strip() for line in text.splitlines()]
    content = [(n, line) for n, line in enumerate(lines, 1) if line and not line.startswith("#")]
    if not content:
        return ClientState("empty", frozenset())
    if "\0" in text:
        fmt, entries = "getmail", list(_getmail(content))
    elif text.startswith(("# POP3 State File", "# Netscape POP3 State File")) or any(
        line.startswith("*") for _, line in content
    ):
        fmt, entries = "thunderbird", list(_thunderbird(content))
    elif all(len(line.split()) == 1 for _, line in content):
        fmt, entries = "plain", [_Entry(None, line) for _, line in content]
    elif all(len(line.split()) == 2 and "@" in line.split()[0] for _, line in content):
        fmt, entries = "fetchmail", list(_fetchmail(content))
    else:
        raise ValueError(
            "not a known client state format (Thunderbird popstate.dat, getmail oldmail-*, "
            "fetchmail .fetchids, or one UIDL per line)"
        )
    return ClientState(fmt, _select(entries, users, host))


def _getmail(content: list[tuple[int, str]]) -> Iterator[_Entry]:
    for n, line in content:
        uidl, sep, _stamp = line.partition("\0")
        if not sep or not uidl.strip():
            raise ValueError(f"line {n}: expected UIDL, NUL, timestamp (getmail oldmail format)")
        yield _Entry(None, uidl.strip())


def _thunderbird(content: list[tuple[int, str]]) -> Iterator[_Entry]:
    owner: tuple[str, str] | None = None
    for n, line in content:
        if line.startswith("*"):
            host, _, user = line[1:].strip().partition(" ")
            owner = (host, user.strip())
            continue
        fields = line.split()
        if owner is None or len(fields) < 2 or len(fields[0]) != 1:
            raise ValueError(
                f"line {n}: expected '*HOST USER' or 'STATUS UIDL TIME' (popstate.dat)"
            )
        if fields[0] in THUNDERBIRD_DOWNLOADED:
            yield _Entry(owner, fields[1])


def _fetchmail(content: list[tuple[int, str]]) -> Iterator[_Entry]:
    for _n, line in content:
        who, uidl = line.split()
        user, _, host = who.rpartition("@")
        yield _Entry((host, user), uidl)


def _select(entries: list[_Entry], users: Collection[str], host: str) -> frozenset[str]:
    owned = [e for e in entries if e.owner is not None]
    if not owned:
        return frozenset(e.uidl for e in entries)
    wanted = {u.lower() for u in users}
    mine = [e for e in owned if e.owner is not None and e.owner[1].lower() in wanted]
    if not mine:
        found = sorted({f"{e.owner[1]}@{e.owner[0]}" for e in owned if e.owner is not None})
        raise ValueError(
            f"no entries for {' or '.join(sorted(wanted))} (the file lists {', '.join(found)})"
        )
    hosts = {e.owner[0].lower() for e in mine if e.owner is not None}
    if len(hosts) > 1:
        mine = [e for e in mine if e.owner is not None and e.owner[0].lower() == host.lower()]
        if not mine:
            raise ValueError(
                f"entries for this user on several hosts ({', '.join(sorted(hosts))}), "
                f"none of them {host}"
            )
    return frozenset(e.uidl for e in mine)


def login_names(account: Account) -> set[str]:
    """Names the user's own client may log in with (for matching client state files)."""
    names = {account.username, account.username.split("*", 1)[0]}
    if account.authorize_as:
        names.add(account.authorize_as)
    return names


def guard_candidates(
    account: Account,
    candidates: Sequence[Candidate],
    first_seen: Mapping[int | str, datetime],
    now: datetime,
) -> tuple[tuple[Candidate, ...], tuple[str, ...]]:
    """Keep what the user's client may not have fetched: (allowed candidates, notes).

    A message may go only after ``min_on_server`` by quotawatch's first-seen record; with
    ``client_state_file``, only if the client's state lists its UIDL as downloaded. An
    unreadable or ambiguous state file allows nothing.
    """
    notes: list[str] = []
    allowed = []
    for cand in candidates:
        seen = first_seen.get(cand.uid, first_seen.get(str(cand.uid)))
        if seen is not None and now - seen >= account.min_on_server:
            allowed.append(cand)
    if len(allowed) < len(candidates):
        notes.append(
            f"{len(candidates) - len(allowed)} message(s) kept: on the server for less than "
            f"{format_duration(account.min_on_server)} (min_on_server), the client may not "
            "have fetched them yet"
        )
    path = account.client_state_file
    if path is None or not allowed:
        return tuple(allowed), tuple(notes)
    try:
        state = read_client_state(path, users=login_names(account), host=account.host)
    except OSError as exc:
        why = exc.strerror or str(exc)
        return (), (*notes, f"client_state_file {path}: {why}; nothing is deleted")
    except ValueError as exc:
        return (), (*notes, f"client_state_file {path}: {exc}; nothing is deleted")
    listed = tuple(c for c in allowed if state.has(str(c.uid)))
    if len(listed) < len(allowed):
        notes.append(
            f"{len(allowed) - len(listed)} message(s) kept: not downloaded by the client "
            f"according to client_state_file {path} ({state.format})"
        )
    return listed, tuple(notes)
