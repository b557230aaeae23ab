"""Benchmark: ``quotawatch run --once`` against a serial imaplib loop, and the daemon's memory at 10,000 accounts.

Run as root from the repository root (it starts a throw-away sandbox Dovecot on loopback):

    python benchmarks/bench_check.py [--accounts 200] [--folders 8] [--big 10000] [--rounds 3]

Part 1 checks ``--accounts`` mailboxes of ``--folders`` folders each, once with ``quotawatch run
--once`` (a subprocess, so Python start-up is included) and once with a serial imaplib loop doing
LOGIN, GETQUOTAROOT, LIST, STATUS per folder, LOGOUT, in the same run; it reports the median of
``--rounds`` rounds and the ratio. Part 2 starts the daemon with ``--big`` configured accounts
(an account_sources usernames file; all but the first ``--accounts`` do not exist and fail
authentication), and reports its resident memory after start-up (READY=1) and after one cycle.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from procstat import tree_cpu  # noqa: E402

from sandbox.dovecot import Dovecot, make_base_dir  # noqa: E402

PASSWORD = "bench-password-1"
EXTRA_FOLDERS = ("Archive", "Lists", "Projects", "Receipts", "Travel", "Family", "Work")


def message(i: int, size: int = 4000) -> bytes:
    head = f"From: a@example.org\r\nTo: b@example.org\r\nSubject: bench {i}\r\n\r\n"
    return head.encode() + b"x" * (size - len(head) - 2) + b"\r\n"


def populate(dovecot: Dovecot, users: list[str], folders: int, ctx: ssl.SSLContext) -> None:
    """Each user gets ``folders`` folders (INBOX, Trash, Junk, Sent, Drafts and extras), with mail."""
    extra = EXTRA_FOLDERS[: max(0, folders - 5)]
    for n, user in enumerate(users):
        dovecot.add_user(user, PASSWORD)
        imap = imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=ctx)
        imap.login(user, PASSWORD)
        for folder in extra:
            imap.create(folder)
        for folder in ("INBOX", *extra):
            for i in range(2 + n % 3):
                imap.append(folder, "(\\Seen)", None, message(i))
        imap.logout()


def serial_imaplib(
    dovecot: Dovecot, users: list[str], ctx: ssl.SSLContext
) -> tuple[float, float, float, float]:
    """LOGIN, GETQUOTAROOT, LIST, STATUS per folder, LOGOUT — one account after the other."""
    before, started, cpu = machine_busy(), time.perf_counter(), time.process_time()
    server = tree_cpu(dovecot.pid_file)
    for user in users:
        imap = imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=ctx)
        imap.login(f"{user}*{dovecot.master_user}", dovecot.master_password)
        imap.getquotaroot("INBOX")
        typ, listing = imap.list('""', "*")
        assert typ == "OK"
        for line in listing:
            name = re.search(rb' "?/"? (.*)$', line or b"")
            assert name is not None
            imap.status(name.group(1).decode(), "(MESSAGES SIZE)")
        imap.logout()
    elapsed = time.perf_counter() - started
    server = tree_cpu(dovecot.pid_file) - server
    return elapsed, time.process_time() - cpu, busy_share(before, machine_busy()), server


def write_config(work: Path, dovecot: Dovecot, users: list[str], **schedule: object) -> Path:
    secret = work / "master.secret"
    secret.write_text(dovecot.master_password)
    secret.chmod(0o600)
    names = work / f"users-{len(users)}.txt"
    names.write_text("\n".join(users) + "\n")
    state = work / f"state-{len(users)}-{time.monotonic_ns()}"
    template = {
        "name": "{user}", "host": dovecot.host, "port": dovecot.imaps_port, "tls": "implicit",
        "ca_file": str(dovecot.ca_file), "username": f"{{user}}*{dovecot.master_user}",
        "password_file": str(secret), "connect_timeout": 10, "timeout": 60,
    }  # fmt: skip
    data = {
        "state_dir": str(state),
        "account_sources": [{"usernames_file": str(names), "template": template}],
        "schedule": {"interval": "1h", "jitter": "0s", **schedule},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    path = work / f"quotawatch-{len(users)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quotawatch() -> list[str]:
    return [sys.executable, "-m", "quotawatch"]


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def run_once(config: Path, dovecot: Dovecot) -> tuple[float, float, float, float]:
    """Wall seconds, quotawatch CPU seconds, share of all CPUs busy, Dovecot CPU seconds."""
    before, started, usage0 = machine_busy(), time.perf_counter(), os.times()
    server = tree_cpu(dovecot.pid_file)
    proc = subprocess.run([*quotawatch(), "--log-level", "warning", "run", "--once", "--config",
                           str(config)], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    elapsed, usage1 = time.perf_counter() - started, os.times()
    cpu = usage1.children_user - usage0.children_user
    cpu += usage1.children_system - usage0.children_system
    if proc.returncode != 0:
        raise SystemExit(f"run --once failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, cpu, busy_share(before, machine_busy()), tree_cpu(dovecot.pid_file) - server


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def scrape(url: str) -> tuple[str, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        text = resp.read().decode()
    return text, time.perf_counter() - started


def checks_done(text: str) -> int:
    return int(
        sum(float(v) for v in re.findall(r"^quotawatch_checks_total\{[^}]*\} (\S+)$", text, re.M))
    )


def daemon_memory(
    config: Path, total: int, env_extra: dict[str, str] | None = None
) -> dict[str, float]:
    """RSS of ``quotawatch run`` after READY=1 and after every account was checked once.

    The end of the cycle is seen in the log (one line per account), so no scrape runs during it.
    """
    data = yaml.safe_load(config.read_text())
    url = f"http://{data['metrics']['listen']}/metrics"
    sockdir = Path(tempfile.mkdtemp(prefix="qw-bench-"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sockdir / "notify"))
    notify.settimeout(300)
    env = dict(os.environ, NOTIFY_SOCKET=str(sockdir / "notify"), **(env_extra or {}))
    started = time.perf_counter()
    proc = subprocess.Popen([*quotawatch(), "--log-level", "info", "run", "--config", str(config)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        ready_after = time.perf_counter() - started
        rss_start = rss_kib(proc.pid)
        cycle_start = time.perf_counter()
        done = 0
        for line in proc.stderr:
            if " checked in " in line or "check failed account=" in line:
                done += 1
                if done >= total:
                    break
        cycle = time.perf_counter() - cycle_start
        rss_cycle = rss_kib(proc.pid)
        text, scrape_seconds = scrape(url)
        assert checks_done(text) >= total
        rss_scraped = rss_kib(proc.pid)
        return {
            "ready_seconds": ready_after, "rss_start_mib": rss_start / 1024,
            "cycle_seconds": cycle, "rss_cycle_mib": rss_cycle / 1024,
            "rss_after_scrape_mib": rss_scraped / 1024, "scrape_seconds": scrape_seconds,
            "scrape_bytes": len(text.encode()),
            "series": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
        }  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        notify.close()
        shutil.rmtree(sockdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--folders", type=int, default=8)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    base = make_base_dir("qw-bench-")
    work = Path(tempfile.mkdtemp(prefix="qw-bench-work-"))
    dovecot = Dovecot(base, name="bench").start()
    try:
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        users = [f"bench{i:04d}" for i in range(args.accounts)]
        t0 = time.perf_counter()
        populate(dovecot, users, args.folders, ctx)
        print(
            f"set up {len(users)} mailboxes x {args.folders} folders in {time.perf_counter() - t0:.1f}s"
        )

        config = write_config(work, dovecot, users, concurrency=args.concurrency)
        run_once(config, dovecot)  # warm-up: Dovecot indexes and caches, Python bytecode
        serial_imaplib(dovecot, users[:20], ctx)
        ours, theirs = [], []
        for _ in range(args.rounds):
            config = write_config(work, dovecot, users, concurrency=args.concurrency)
            ours.append(run_once(config, dovecot))
            theirs.append(serial_imaplib(dovecot, users, ctx))
        q = sorted(ours)[len(ours) // 2]
        s = sorted(theirs)[len(theirs) // 2]
        print(f"\n{args.accounts} accounts x {args.folders} folders, median of {args.rounds} rounds "
              f"({os.cpu_count()} CPUs shared with Dovecot)")  # fmt: skip
        print(f"  quotawatch run --once (concurrency {args.concurrency}, incl. start-up): "
              f"{q[0]:.2f}s wall, {q[1]:.2f}s quotawatch CPU, {q[3]:.2f}s Dovecot CPU, "
              f"machine {q[2]:.0%} busy")  # fmt: skip
        print(f"  serial imaplib LOGIN/GETQUOTAROOT/LIST/STATUS x{args.folders}/LOGOUT: "
              f"{s[0]:.2f}s wall, {s[1]:.2f}s client CPU, {s[3]:.2f}s Dovecot CPU, "
              f"machine {s[2]:.0%} busy")  # fmt: skip
        print(f"  ratio serial / quotawatch: {s[0] / q[0]:.2f}x")

        if args.big:
            ghosts = [f"ghost{i:05d}" for i in range(args.big - len(users))]
            big = write_config(work, dovecot, users + ghosts, concurrency=args.concurrency)
            mem = daemon_memory(big, args.big)
            print(
                f"\ndaemon with {args.big} configured accounts ({len(ghosts)} fail authentication)"
            )
            print(
                f"  READY=1 after {mem['ready_seconds']:.1f}s, RSS {mem['rss_start_mib']:.1f} MiB"
            )
            print(
                f"  one cycle took {mem['cycle_seconds']:.1f}s, RSS after it {mem['rss_cycle_mib']:.1f} MiB"
            )
            print(f"  /metrics: {mem['scrape_bytes'] / 1e6:.1f} MB in {mem['scrape_seconds']:.2f}s, "
                  f"RSS after the scrape {mem['rss_after_scrape_mib']:.1f} MiB")  # fmt: skip
    finally:
        dovecot.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
