"""Benchmark the standard cleanup job against a naive imaplib loop and imapfilter, on a sandbox Dovecot.

Run from the repository root: ``python benchmarks/bench_cleanup.py`` (root or a normal user; needs
Debian's dovecot-imapd, optionally imapfilter). Every tool gets its own fresh copy of the same
corpus in the same Dovecot, and every result is checked: each tool must leave exactly the
messages the rules keep.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import tree_cpu

from quotawatch.config import Account, Config, parse_config
from quotawatch.config.secrets import SecretCache
from quotawatch.retention.audit import AuditLog
from quotawatch.service.jobs import cleanup_account, cleanup_accounts
from quotawatch.state import State
from sandbox.dovecot import Dovecot, make_base_dir

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC)
PASSWORD = "bench-password"
RULES = {
    "trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received"},
    "junk-14d": {"folders": ["\\Junk"], "older_than": "14d", "age": "received"},
    "big-30d": {"folders": ["Big"], "older_than": "30d", "age": "received"},
}


# ------------------------------------------------------------------------------------ corpus
def message(rng: random.Random, n: int, lines: int | None = None) -> bytes:
    head = (
        f"From: sender{rng.randrange(500)}@example.org\r\nTo: user@example.org\r\n"
        f"Subject: message {n}\r\nMessage-ID: <{n}.{rng.getrandbits(40):x}@example.org>\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
    ).encode()
    count = rng.randrange(20, 120) if lines is None else lines
    return head + b"".join(b"body line %06d of a test message\r\n" % i for i in range(count))


#: share of old messages in Trash and in Junk, per corpus (see ``corpus``)
CORPORA = {
    "standard": (2 / 3, 0.6),
    "old": (1.0, 1.0),  # everything in Trash and Junk is past its age (5 % of Trash flagged)
    "few": (0.05, 0.05),  # a cleanup that runs often: 5 % old
    "mixed": (2 / 3, 0.6),  # the standard ages, sizes from 0.7 KiB to 65 KiB (log-uniform)
}


def corpus(
    messages: int, seed: int = 7, kind: str = "standard"
) -> dict[str, list[tuple[bytes, datetime, str]]]:
    """INBOX 50 % (no rule), Trash 30 % (by default 2/3 older than 35 days, 5 % of those
    flagged), Junk 20 % (by default 60 % older than 15 days); ``kind`` picks the shares of old
    mail and the sizes (CORPORA). Ages stay clear of the 30/14-day boundaries, so day-granular
    tools (imapfilter's is_older, doveadm's before) select exactly the same messages."""
    rng = random.Random(seed)
    trash_old, junk_old = CORPORA[kind]

    def body(n: int) -> bytes:
        if kind != "mixed":
            return message(rng, n)
        return message(rng, n, int(2 ** rng.uniform(4, 11)))  # 16..2,048 lines of 32 bytes

    out: dict[str, list[tuple[bytes, datetime, str]]] = {"INBOX": [], "Trash": [], "Junk": []}
    for n in range(messages):
        r = rng.random()
        if r < 0.5:
            out["INBOX"].append((body(n), NOW - timedelta(days=rng.uniform(0, 900)), "S"))
        elif r < 0.8:
            old = rng.random() < trash_old
            days = rng.uniform(35, 400) if old else rng.uniform(0, 25)
            flags = "FS" if old and rng.random() < 0.05 else "S"
            out["Trash"].append((body(n), NOW - timedelta(days=days), flags))
        else:
            days = rng.uniform(15.5, 200) if rng.random() < junk_old else rng.uniform(0, 13)
            out["Junk"].append((body(n), NOW - timedelta(days=days), ""))
    return out


def expected_left(data: dict[str, list[tuple[bytes, datetime, str]]]) -> dict[str, int]:
    keep = {"INBOX": 0, "Trash": 30, "Junk": 14}
    return {
        f: sum(
            1
            for _m, when, flags in items
            if not keep[f] or "F" in flags or NOW - when < timedelta(days=keep[f])
        )
        for f, items in data.items()
    }


# ------------------------------------------------------------------------------------ counting
class Counter:
    """Counts IMAP commands (tags) sent and bytes received by imaplib (quotawatch, naive loop)."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self._lock = threading.Lock()
        original = imaplib.IMAP4._new_tag
        counter = self

        def new_tag(self_: Any) -> Any:
            with counter._lock:
                counter.count += 1
            return original(self_)

        imaplib.IMAP4._new_tag = new_tag  # type: ignore[method-assign]
        readline, read = imaplib.IMAP4.readline, imaplib.IMAP4.read

        def counted_readline(self_: Any) -> bytes:
            line: bytes = readline(self_)
            counter.bytes += len(line)
            return line

        def counted_read(self_: Any, size: int) -> bytes:
            data: bytes = read(self_, size)
            counter.bytes += len(data)
            return data

        imaplib.IMAP4.readline = counted_readline  # type: ignore[method-assign]
        imaplib.IMAP4.read = counted_read  # type: ignore[method-assign]
        # quotawatch reads through its bounded mixin, which overrides imaplib's readline/read
        from quotawatch.mail.imap import client as qw_client

        bounded_readline, bounded_read = qw_client._Bounded.readline, qw_client._Bounded.read

        def counted_bounded_readline(self_: Any) -> bytes:
            line: bytes = bounded_readline(self_)
            counter.bytes += len(line)
            return line

        def counted_bounded_read(self_: Any, size: int) -> bytes:
            data: bytes = bounded_read(self_, size)
            counter.bytes += len(data)
            return data

        qw_client._Bounded.readline = counted_bounded_readline  # type: ignore[method-assign]
        qw_client._Bounded.read = counted_bounded_read  # type: ignore[method-assign]


COUNTER = Counter()


def _children_cpu() -> float:
    """CPU seconds of finished child processes (imapfilter); the server is not our child."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measured(dovecot: Dovecot) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    start, commands, received = time.perf_counter(), COUNTER.count, COUNTER.bytes
    cpu, server = time.process_time() + _children_cpu(), tree_cpu(dovecot.pid_file)
    yield out
    out["seconds"] = time.perf_counter() - start
    out["cpu"] = time.process_time() + _children_cpu() - cpu
    out["server"] = tree_cpu(dovecot.pid_file) - server
    out["commands"] = COUNTER.count - commands
    out["kib"] = (COUNTER.bytes - received) / 1024


# ------------------------------------------------------------------------------------ tools
def config_for(
    dovecot: Dovecot, users: list[str], state: Path, rules: list[str], concurrency: int
) -> Config:
    secret = state / "password"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(PASSWORD)
    secret.chmod(0o600)
    accounts = [
        {"name": u, "host": dovecot.host, "port": dovecot.imap_port, "tls": "none",
         "allow_insecure_plaintext": True, "username": u, "password_file": str(secret),
         "rules": rules, "max_delete_fraction": 1.0, "max_delete_messages": 1_000_000}
        for u in users
    ]  # fmt: skip
    return parse_config(
        {
            "state_dir": str(state),
            "accounts": accounts,
            "rules": RULES,
            "schedule": {"concurrency": concurrency},
        }
    )


def run_quotawatch(config: Config) -> int:
    state = State(config.state_dir)
    audit = AuditLog(config.state_dir / "audit.jsonl")
    runs = list(
        cleanup_accounts(config.accounts, config, state, audit, SecretCache(), apply=True, now=NOW)
    )
    state.close()
    bad = [p.error or r.errors for p, r in runs if not p.ok or r is None or not r.ok]
    if bad:
        raise SystemExit(f"quotawatch failed: {bad[:3]}")
    return sum(r.messages for _p, r in runs if r is not None)


def run_one(config: Config, account: Account) -> int:
    state = State(config.state_dir)
    plan, result = cleanup_account(
        account,
        config,
        state,
        AuditLog(config.state_dir / "audit.jsonl"),
        SecretCache(),
        apply=True,
        now=NOW,
    )
    state.close()
    if result is None or not result.ok:
        raise SystemExit(f"quotawatch failed: {plan.error or result}")
    return result.messages


_FETCH_RE = re.compile(rb"UID (\d+)")


def naive_account(dovecot: Dovecot, user: str, folders: dict[str, int]) -> int:
    """What a quick script does: fetch every message's date, delete old ones one at a time
    (UID STORE + UID EXPUNGE per message, so at least it never expunges others' \\Deleted)."""
    m = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
    m.login(user, PASSWORD)
    deleted = 0
    for folder, days in folders.items():
        m.select(folder)
        _typ, data = m.uid("FETCH", "1:*", "(INTERNALDATE FLAGS)")
        cutoff = (NOW - timedelta(days=days)).timestamp()
        doomed = []
        for line in data:
            if not isinstance(line, bytes) or b"INTERNALDATE" not in line:
                continue
            uid = _FETCH_RE.search(line)
            when = imaplib.Internaldate2tuple(line)
            if uid and when and b"\\Flagged" not in line and time.mktime(when) < cutoff:
                doomed.append(uid.group(1).decode())
        for uid in doomed:
            m.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
            m.uid("EXPUNGE", uid)
        deleted += len(doomed)
    m.logout()
    return deleted


def imapfilter_config(dovecot: Dovecot, users: list[str], path: Path) -> None:
    lines = ["options.timeout = 120", "options.starttls = false", "options.create = false", ""]
    for u in users:
        lines += [
            f"local a = IMAP {{ server = '{dovecot.host}', port = {dovecot.imap_port}, "
            f"username = '{u}', password = '{PASSWORD}' }}",
            "local t = a['Trash']:is_older(30) * a['Trash']:is_unflagged()",
            "t:delete_messages()",
            "a['Junk']:is_older(14):delete_messages()",
            "",
        ]
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------ setup
#: what Thunderbird fetches for its message list (its default header set), as a mail client's
#: first sync of a folder does
CLIENT_SYNC = (
    b"(UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
    b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])"
)

#: the mailboxes' state when the tools start: ``fresh`` (bulk-written Maildir files, indexed by
#: ``force-resync`` and nothing else: no client has ever opened them) or ``in-use`` (a mail
#: client has synced every folder once, as every mailbox read over IMAP has been)
STATES = ("fresh", "in-use")


def client_sync(dovecot: Dovecot, user: str, folders: list[str]) -> None:
    """A mail client's first look at the account: the folder list, then in every folder the
    headers and flags of every message and the quota (Thunderbird asks for it when it opens a
    folder)."""
    m = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
    m.login(user, PASSWORD)
    m.list()
    m.lsub()
    m.getquotaroot("INBOX")
    for folder in folders:
        m.select(folder, readonly=True)
        m.uid("FETCH", "1:*", CLIENT_SYNC.decode())
        m.getquotaroot(folder)
    m.logout()


def make_users(
    dovecot: Dovecot, prefix: str, count: int, data: dict[str, list[Any]], state: str = "fresh"
) -> list[str]:
    users = [f"{prefix}{i}" for i in range(count)]

    def one(user: str) -> None:
        dovecot.add_user(user, PASSWORD, quota_bytes=0)
        for folder, items in data.items():
            dovecot.deliver_bulk(user, folder, items)
        if state == "in-use":
            client_sync(dovecot, user, list(data))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, users))
    return users


def left(dovecot: Dovecot, user: str, folders: list[str]) -> dict[str, int]:
    out = {}
    for folder in folders:
        status = dovecot.doveadm("mailbox", "status", "-u", user, "messages", folder)
        out[folder] = int(status.split("=")[1])
    return out


def verify(dovecot: Dovecot, users: list[str], want: dict[str, int], tool: str) -> str:
    for u in users:
        got = left(dovecot, u, list(want))
        if got != want:
            return f"WRONG ({u}: {got}, want {want})"
    return "ok"


# ------------------------------------------------------------------------------------ main
TOOLS = ("qw1", "qw16", "cli", "naive", "imapfilter", "doveadm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--messages", type=int, default=2000, help="messages per account")
    ap.add_argument("--big", type=int, default=100_000, help="size of the big folder (0: skip)")
    ap.add_argument("--corpus", default="standard",
                    help=f"comma-separated age/size distributions: {', '.join(CORPORA)}")  # fmt: skip
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated: {', '.join(TOOLS)}")
    ap.add_argument("--state", default="fresh",
                    help=f"comma-separated mailbox states: {', '.join(STATES)} (see STATES)")  # fmt: skip
    ap.add_argument("--no-imapfilter", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the sandbox directory")
    args = ap.parse_args()
    tools = [
        t for t in args.tools.split(",") if t and not (t == "imapfilter" and args.no_imapfilter)
    ]
    unknown = (
        [t for t in tools if t not in TOOLS]
        + [c for c in args.corpus.split(",") if c not in CORPORA]
        + [st for st in args.state.split(",") if st not in STATES]
    )
    if unknown:
        raise SystemExit(f"unknown tool or corpus: {', '.join(unknown)}")
    if "cli" in tools:  # as pip installs it: with bytecode, also under PYTHONDONTWRITEBYTECODE
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "quotawatch")],
                       check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})  # fmt: skip
    base = make_base_dir("qw-bench-")
    work = Path(tempfile.mkdtemp(prefix="qw-bench-state-"))
    dovecot = Dovecot(base, name="bench").start()
    rows: list[list[str]] = []
    try:
        jobs = [(k, st) for st in args.state.split(",") for k in args.corpus.split(",")]
        for n, (kind, st) in enumerate(jobs):
            rows += standard_job(dovecot, work / f"{kind}-{st}", args, kind, tools, f"c{n}", st)
        if args.big:
            rows += big_folder(dovecot, work, args.big)
    finally:
        dovecot.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    return 0


def cli_config(dovecot: Dovecot, users: list[str], state: Path, concurrency: int) -> Path:
    """The YAML a person would write for ``quotawatch cleanup --apply`` over these accounts."""
    config_for(dovecot, users, state, [], concurrency)  # writes the password file
    lines = [f"state_dir: {state}", f"schedule: {{concurrency: {concurrency}}}", "rules:"]
    for name in ("trash-30d", "junk-14d"):
        rule = RULES[name]
        lines.append(f"  {name}: {{folders: ['{rule['folders'][0]}'], older_than: "
                     f"{rule['older_than']}, age: received}}")  # fmt: skip
    lines.append("accounts:")
    for u in users:
        lines.append(f"  - {{name: {u}, host: {dovecot.host}, port: {dovecot.imap_port}, "
                     "tls: none, allow_insecure_plaintext: true, "
                     f"username: {u}, password_file: {state / 'password'}, "
                     "rules: [trash-30d, junk-14d], max_delete_fraction: 1.0, "
                     "max_delete_messages: 1000000}")  # fmt: skip
    path = state / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(config: Path) -> int:
    """``quotawatch cleanup --apply`` as a person runs it: a new Python process, start-up,
    config, state, the accounts 16 at once (byte-compiled first, as an installed package is)."""
    proc = subprocess.run(
        [sys.executable, "-m", "quotawatch", "cleanup", "--config", str(config), "--apply",
         "--json"],
        capture_output=True, text=True, timeout=3600, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"quotawatch cleanup failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return -1


def run_doveadm(dovecot: Dovecot, users: list[str], work: Path) -> int:
    """The server-side floor: ``doveadm expunge`` per rule over every user of a list, in one
    process (``-F``; ``-A`` needs an iterable userdb, which this sandbox Dovecot does not have)."""
    listing = work / "doveadm-users"
    listing.write_text("".join(f"{u}\n" for u in users))
    dovecot.doveadm("expunge", "-F", str(listing), "mailbox", "Trash", "before", "30d",
                    "unflagged")  # fmt: skip
    dovecot.doveadm("expunge", "-F", str(listing), "mailbox", "Junk", "before", "14d")
    return -1


def standard_job(
    dovecot: Dovecot, work: Path, args: argparse.Namespace, kind: str, chosen: list[str],
    tag: str, state: str = "fresh",
) -> list[list[str]]:  # fmt: skip
    data = corpus(args.messages, kind=kind)
    want = expected_left(data)
    work.mkdir(parents=True, exist_ok=True)
    tools: list[tuple[str, str, Callable[[list[str]], int]]] = []

    def qw(concurrency: int) -> Callable[[list[str]], int]:
        return lambda users: run_quotawatch(
            config_for(
                dovecot, users, work / f"qw{concurrency}", ["trash-30d", "junk-14d"], concurrency
            )
        )

    if "qw1" in chosen:
        tools.append(("quotawatch, 1 account at a time", "qa", qw(1)))
    if "qw16" in chosen:
        tools.append(("quotawatch, 16 accounts at once", "qb", qw(16)))
    if "cli" in chosen:
        tools.append(("quotawatch cleanup --apply (CLI, 16 at once)", "qc",
                      lambda users: run_cli(cli_config(dovecot, users, work / "cli", 16))))  # fmt: skip
    if "naive" in chosen:
        tools.append(("naive imaplib loop", "na",
                      lambda users: sum(naive_account(dovecot, u, {"Trash": 30, "Junk": 14})
                                        for u in users)))  # fmt: skip
    imapfilter = shutil.which("imapfilter")
    if imapfilter and "imapfilter" in chosen:

        def run_imapfilter(users: list[str]) -> int:
            cfg = work / "imapfilter.lua"
            imapfilter_config(dovecot, users, cfg)
            proc = subprocess.run(
                [imapfilter, "-c", str(cfg)], capture_output=True, text=True, timeout=3600
            )
            if proc.returncode != 0:
                raise SystemExit(
                    f"imapfilter failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
                )
            return -1

        tools.append(("imapfilter (is_older + delete_messages)", "im", run_imapfilter))
    if "doveadm" in chosen:
        tools.append(("doveadm expunge -F (server side)", "da",
                      lambda users: run_doveadm(dovecot, users, work)))  # fmt: skip
    label = f"{kind}{'' if state == 'fresh' else ', ' + state}: {args.accounts} x {args.messages}"
    print(f"{label}: building {len(tools)} copies of the corpus ...", file=sys.stderr)
    rows = []
    results = []
    for name, prefix, fn in tools:
        users = make_users(dovecot, tag + prefix, args.accounts, data, state)
        print(f"  running {name} ...", file=sys.stderr)
        with measured(dovecot) as m:
            fn(users)
        if prefix == "da":  # doveadm works in its own process, outside the Dovecot master
            m["server"], m["cpu"] = m["server"] + m["cpu"], 0.0
        results.append((name, prefix, m, verify(dovecot, users, want, name)))
    removed = sum(len(v) for v in data.values()) - sum(want.values())
    ref = {p: m for _n, p, m, _c in results}
    for name, prefix, m, check in results:
        ratio = "-"
        if "im" in ref and prefix != "im":
            ratio = f"{m['seconds'] / ref['im']['seconds']:.2f}x im"
        if "da" in ref and prefix not in ("da", "na"):
            ratio += f", {m['seconds'] / ref['da']['seconds']:.2f}x da"
        own = prefix in ("qa", "qb", "na")  # counted in this process
        commands = str(int(m["commands"])) if own else "-"
        kib = f"{m['kib']:.0f}" if own else "-"
        cpu = "-" if prefix == "da" else f"{m['cpu']:.2f}"
        row = [label, name, f"{removed * args.accounts}", f"{m['seconds']:.2f}", cpu,
               f"{m['server']:.2f}", commands, kib]  # fmt: skip
        rows.append([*row, ratio, check])
    return rows


def big_folder(dovecot: Dovecot, work: Path, big: int) -> list[list[str]]:
    """10 old messages in a folder of 1,000 and of ``big`` messages: first with the server's
    caches cold (right after delivery), then warm (10 more old messages, as a daemon that
    checks every few minutes sees it)."""
    rng = random.Random(11)
    results: dict[tuple[int, str], tuple[dict[str, float], dict[str, float]]] = {}
    for size in (1000, big):
        print(f"big folder: delivering {size} messages ...", file=sys.stderr)
        items = [(message(rng, n), NOW - timedelta(days=40 if n % (size // 10) == 0 else rng.uniform(0, 25)), "S")
                 for n in range(size)]  # fmt: skip
        user, naive_user = f"big{size}", f"nbig{size}"
        for u in (user, naive_user):
            dovecot.add_user(u, PASSWORD, quota_bytes=0)
            dovecot.deliver_bulk(u, "Big", items)
        config = config_for(dovecot, [user], work / f"big{size}", ["big-30d"], 1)
        for cache in ("cold", "warm"):
            if cache == "warm":
                extra = [(message(rng, size + n), NOW - timedelta(days=45), "S") for n in range(10)]
                for u in (user, naive_user):
                    dovecot.deliver_bulk(u, "Big", extra)
            with measured(dovecot) as m:
                n = run_one(config, config.accounts[0])
            with measured(dovecot) as nm:
                nn = naive_account(dovecot, naive_user, {"Big": 30})
            if n != 10 or nn != 10:
                raise SystemExit(f"big folder: expected 10 deletions, got {n} and {nn}")
            results[(size, cache)] = (m, nm)
    rows = []
    for cache in ("cold", "warm"):
        for tool, k in (("quotawatch", 0), ("naive imaplib loop", 1)):
            small = results[(1000, cache)][k]
            for size in (1000, big):
                m = results[(size, cache)][k]
                ratio = (
                    f"{m['seconds'] / small['seconds']:.2f}x of 1,000" if size == big else "1.00x"
                )
                rows.append([f"delete 10 of {size:,} in one folder ({cache})", tool, "10",
                             f"{m['seconds']:.3f}", f"{m['cpu']:.3f}", f"{m['server']:.2f}",
                             str(int(m["commands"])),
                             f"{m['kib']:.0f}", ratio, "ok"])  # fmt: skip
    return rows


def print_table(rows: list[list[str]]) -> None:
    headers = [
        "scenario",
        "tool",
        "deleted",
        "seconds",
        "client CPU s",
        "server CPU s",
        "IMAP cmds",
        "KiB recv",
        "ratio",
        "result",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    print(
        "\nratio: standard job = tool seconds / imapfilter's (im) and doveadm's (da) in the same"
        " run (below 1: faster); big folder = "
        "seconds relative to the same tool on the 1,000-message folder (1.00x = independent of size)."
        "\nclient CPU s: CPU time of this process (quotawatch, naive loop) or of the imapfilter "
        "child; server CPU s: CPU time of the sandbox Dovecot's processes (its master, logins, "
        "auth, one imap process per session) during the run."
    )


if __name__ == "__main__":
    sys.exit(main())
