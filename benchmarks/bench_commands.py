"""Dovecot's CPU per IMAP command type for the standard cleanup job: quotawatch vs imapfilter.

Run from the repository root: ``python benchmarks/bench_commands.py [--accounts 10]``. Each tool
talks to the sandbox Dovecot through a recording proxy, one account at a time; the CPU time of a
command is the growth of the summed ``/proc/PID/schedstat`` run time (nanoseconds) of every
process under the Dovecot master between this command line and the next one, so it includes what
the command makes Dovecot do later in the same session's idle time (none: the client waits).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cleanup as bench
from procstat import tree_cpu

from sandbox.dovecot import Dovecot, _free_ports, make_base_dir


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


class Recorder:
    """(label, Dovecot run time so far in ns) at each command line a client sends."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.last: dict[int, int] = {}  # a process that exited keeps its last value
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def mark(self, label: str) -> None:
        with self.lock:
            for pid in _tree(self.master):
                with contextlib.suppress(OSError):  # exited meanwhile
                    self.last[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            self.events.append((label, sum(self.last.values())))

    def per_label(self) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for (label, t0), (_next, t1) in zip(self.events, self.events[1:], strict=False):
            n, s = out.get(label, (0, 0.0))
            out[label] = (n + 1, s + (t1 - t0) / 1e9)
        return out


_SKIP = re.compile(rb"^[A-Za-z0-9+/=]+$")  # a SASL continuation, not a command


def label(line: bytes) -> str | None:
    """The command's kind: its name and the search keys or fetch items without UIDs."""
    words = line.split()
    if len(words) < 2 or _SKIP.match(line):
        return None
    name = words[1].upper()
    if name == b"UID" and len(words) > 2:
        sub = words[2].upper()
        rest = [w for w in words[3:] if not w[:1].isdigit() and w not in (b"RETURN", b"(ALL)")]
        if sub == b"FETCH":
            rest = [w for w in rest if b"MESSAGE-ID" in w.upper()][:1] or rest[:1]
        return b" ".join([b"UID", sub, *rest[:4]]).decode()
    return name.decode()


def proxy(port: int, target: int, rec: Recorder, stop: threading.Event) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    srv.settimeout(0.2)

    def up(client: socket.socket, server: socket.socket) -> None:
        buf = b""
        try:
            while data := client.recv(65536):
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    if (kind := label(line)) is not None:
                        rec.mark(kind)
                server.sendall(data)
        except OSError:
            pass
        finally:
            server.close()

    def down(server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()

    while not stop.is_set():
        try:
            client, _ = srv.accept()
        except TimeoutError:
            continue
        server = socket.create_connection(("127.0.0.1", target))
        threading.Thread(target=up, args=(client, server), daemon=True).start()
        threading.Thread(target=down, args=(server, client), daemon=True).start()
    srv.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=10)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--corpus", default="standard", choices=list(bench.CORPORA))
    ap.add_argument("--state", default="fresh", choices=bench.STATES,
                    help="the mailboxes when the tools start (bench_cleanup.STATES)")  # fmt: skip
    args = ap.parse_args()
    base, work = make_base_dir("qw-cmds-"), Path(tempfile.mkdtemp(prefix="qw-cmds-state-"))
    dovecot = Dovecot(base, name="cmds").start()
    master = int(Path(dovecot.pid_file).read_text().split()[0])
    port = _free_ports(1)[0]
    data = bench.corpus(args.messages, kind=args.corpus)
    try:
        for tool in ("quotawatch", "imapfilter"):
            users = bench.make_users(dovecot, tool[:2], args.accounts, data, args.state)
            rec, stop = Recorder(master), threading.Event()
            threading.Thread(target=proxy, args=(port, dovecot.imap_port, rec, stop)).start()
            real, dovecot.imap_port = dovecot.imap_port, port
            before = tree_cpu(dovecot.pid_file)
            try:
                if tool == "quotawatch":
                    rules = ["trash-30d", "junk-14d"]
                    bench.run_quotawatch(bench.config_for(dovecot, users, work / "qw", rules, 1))
                else:
                    lua = work / "imapfilter.lua"
                    bench.imapfilter_config(dovecot, users, lua)
                    subprocess.run(["imapfilter", "-c", str(lua)], check=True, capture_output=True)
            finally:
                dovecot.imap_port = real
                time.sleep(0.5)
                rec.mark("(end)")
                stop.set()
            total = tree_cpu(dovecot.pid_file) - before
            check = bench.verify(dovecot, users, bench.expected_left(data), tool)
            rows = sorted(rec.per_label().items(), key=lambda kv: -kv[1][1])
            print(f"\n{tool}: {args.accounts} accounts, Dovecot CPU {total:.2f} s ({check})")
            print(f"  {'command':48} {'per account':>11} {'ms per account':>15}")
            for kind, (n, seconds) in rows:
                if seconds >= 0.0005 * args.accounts:
                    per = f"{n / args.accounts:.1f}"
                    print(f"  {kind:48} {per:>11} {1000 * seconds / args.accounts:15.2f}")
    finally:
        dovecot.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
