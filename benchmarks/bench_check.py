"""Benchmark: ``quotawatch run --once`` and ``check`` against a serial imaplib loop, and the daemon's memory at 10,000 accounts.

Run as root from the repository root (it starts a throw-away sandbox Dovecot on loopback):

    python benchmarks/bench_check.py [--accounts 200] [--folders 8] [--big 10000] [--rounds 3]
                                     [--compare OTHER_TREE] [--concurrency 16 ...]

Part 1 checks ``--accounts`` mailboxes of ``--folders`` folders each, in every round with
``quotawatch run --once`` and ``quotawatch check --json`` (subprocesses, so Python start-up is
included), with ``run --once`` of one account (the start-up alone), and with a serial imaplib
loop doing LOGIN, GETQUOTAROOT, LIST, STATUS per folder, LOGOUT (in this process: no start-up),
all in the same run against the same Dovecot; it reports the median of ``--rounds`` rounds, the
spread, the ratios and quotawatch's CPU per account (all of it, and beyond the start-up).
``--compare`` runs another checkout of quotawatch (e.g. ``git worktree add /tmp/before HEAD~3``)
as one more tool in every round. Each tree's modules are compiled to bytecode first (as a pip or
Debian install has them; ``--no-compile`` to skip), and each tool keeps its state directory from
round to round, as a daemon or a cron job does.

Part 2 starts the daemon with ``--big`` configured accounts (an account_sources usernames file;
all but the first ``--accounts`` do not exist and fail authentication), and reports its resident
memory after start-up (READY=1) and after one cycle.
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
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

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


def write_config(
    work: Path, dovecot: Dovecot, users: list[str], state: str = "", **schedule: object
) -> Path:
    """The config for ``users``; ``state`` names a state directory kept from round to round
    (default: a new one)."""
    secret = work / "master.secret"
    secret.write_text(dovecot.master_password)
    secret.chmod(0o600)
    names = work / f"users-{len(users)}.txt"
    names.write_text("\n".join(users) + "\n")
    state_dir = work / (f"state-{state}" if state else f"state-{len(users)}-{time.monotonic_ns()}")
    template = {
        "name": "{user}", "host": dovecot.host, "port": dovecot.imaps_port, "tls": "implicit",
        "ca_file": str(dovecot.ca_file), "username": f"{{user}}*{dovecot.master_user}",
        "password_file": str(secret), "connect_timeout": 10, "timeout": 60,
    }  # fmt: skip
    data = {
        "state_dir": str(state_dir),
        "account_sources": [{"usernames_file": str(names), "template": template}],
        "schedule": {"interval": "1h", "jitter": "0s", **schedule},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
    }
    path = work / f"quotawatch-{len(users)}-{state or time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def quotawatch() -> list[str]:
    return [sys.executable, "-m", "quotawatch"]


def compile_tree(tree: Path) -> None:
    """Bytecode for a tree's modules, as an installed package has (PYTHONDONTWRITEBYTECODE=1,
    as set on some machines, would otherwise have Python compile them in every run)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "quotawatch")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def run_once(
    config: Path, dovecot: Dovecot, tree: Path = REPO, command: str = "run"
) -> tuple[float, float, float, float]:
    """Wall seconds, quotawatch CPU seconds, share of all CPUs busy, Dovecot CPU seconds of
    ``quotawatch run --once`` (or ``check --json``) from the checkout ``tree``."""
    args = ["run", "--once"] if command == "run" else ["check", "--json"]
    before, started, usage0 = machine_busy(), time.perf_counter(), os.times()
    server = tree_cpu(dovecot.pid_file)
    proc = subprocess.run([*quotawatch(), "--log-level", "warning", *args, "--config",
                           str(config)], cwd=tree, capture_output=True, text=True)  # fmt: skip
    elapsed, usage1 = time.perf_counter() - started, os.times()
    cpu = usage1.children_user - usage0.children_user
    cpu += usage1.children_system - usage0.children_system
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
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
    config: Path, total: int, env_extra: dict[str, str] | None = None, scrapes: int = 1
) -> dict[str, Any]:
    """RSS of ``quotawatch run`` after READY=1, after every account was checked once and after
    ``scrapes`` scrapes of /metrics (``scrape_seconds``: their median, ``scrape_all``: each).

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
        times = []
        for _ in range(scrapes):
            text, seconds = scrape(url)
            times.append(seconds)
        scrape_seconds = median(times)
        assert checks_done(text) >= total
        rss_scraped = rss_kib(proc.pid)
        return {
            "ready_seconds": ready_after, "rss_start_mib": rss_start / 1024,
            "cycle_seconds": cycle, "rss_cycle_mib": rss_cycle / 1024,
            "rss_after_scrape_mib": rss_scraped / 1024, "scrape_seconds": scrape_seconds,
            "scrape_all": times,
            "scrape_bytes": len(text.encode()),
            "series": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
        }  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        notify.close()
        shutil.rmtree(sockdir, ignore_errors=True)


Result = tuple[
    float, float, float, float
]  # wall s, client CPU s, machine busy share, Dovecot CPU s


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def report(
    results: dict[str, list[Result]], serial: str, startup: dict[str, str], accounts: int
) -> None:
    """One line per tool: medians, the wall-time spread, the least CPU (other load on the machine
    only adds to it), CPU per account (all of it, and beyond the tree's start-up; medians) and
    the time as a share of the serial loop's in the same round."""
    print(f"  {'tool':<45} {'wall s':>6} {'spread':>11} {'CPU s':>6} {'min':>5} {'Dovecot':>7} "
          f"{'ms/acct':>7} {'beyond':>6} {'x serial':>15}")  # fmt: skip
    for name, runs in results.items():
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        per = "-" if name in startup.values() else f"{median(cpu) / accounts * 1000:.2f}"
        base = startup.get(name)
        beyond = "-"
        if base is not None and base in results and name != base:
            beyond = f"{(median(cpu) - median([r[1] for r in results[base]])) / (accounts - 1) * 1000:.2f}"
        shares = [w / s[0] for w, s in zip(wall, results[serial], strict=True)]
        share = f"{median(shares):.2f} ({min(shares):.2f}-{max(shares):.2f})"
        print(f"  {name:<45} {median(wall):6.2f} {min(wall):5.2f}-{max(wall):5.2f} {median(cpu):6.2f} "
              f"{min(cpu):5.2f} "
              f"{median([r[3] for r in runs]):7.2f} {per:>7} "
              f"{beyond:>6} {share:>15}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--folders", type=int, default=8)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    parser.add_argument("--compare", type=Path, help="another quotawatch checkout to run as well")
    parser.add_argument("--no-compile", action="store_true", help="leave bytecode as it is")
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
        trees = {"quotawatch": REPO} | ({"before": args.compare.resolve()} if args.compare else {})
        tools: dict[str, Callable[[], Result]] = {}
        startup: dict[str, str] = {}
        for label, tree in trees.items():
            if not args.no_compile:
                compile_tree(tree)
            one = write_config(work, dovecot, users[:1], state=f"{label}-one")
            tools[f"{label} start-up (run --once, 1 account)"] = partial(
                run_once, one, dovecot, tree
            )
            for c in args.concurrency:
                config = write_config(work, dovecot, users, state=f"{label}-c{c}", concurrency=c)
                name = f"{label} run --once, concurrency {c}"
                tools[name] = partial(run_once, config, dovecot, tree)
                startup[name] = f"{label} start-up (run --once, 1 account)"
            config = write_config(work, dovecot, users, state=f"{label}-check",
                                  concurrency=args.concurrency[0])  # fmt: skip
            name = f"{label} check --json, concurrency {args.concurrency[0]}"
            tools[name] = partial(run_once, config, dovecot, tree, "check")
            startup[name] = f"{label} start-up (run --once, 1 account)"
        serial = f"serial imaplib (LIST + {args.folders} x STATUS)"
        tools[serial] = partial(serial_imaplib, dovecot, users, ctx)
        for name, tool in tools.items():  # warm-up: Dovecot's indexes and caches, the state dirs
            if name != serial:
                tool()
        serial_imaplib(dovecot, users[:20], ctx)
        results: dict[str, list[Result]] = {name: [] for name in tools}
        order = list(tools)
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:  # rotated each round
                results[name].append(tools[name]())
        print(f"\n{args.accounts} accounts x {args.folders} folders, median of {args.rounds} rounds "
              f"({os.cpu_count()} CPUs shared with Dovecot; machine busy "
              f"{median([x[2] for runs in results.values() for x in runs]):.0%})")  # fmt: skip
        report(results, serial, startup, args.accounts)

        if args.big:
            ghosts = [f"ghost{i:05d}" for i in range(args.big - len(users))]
            big = write_config(work, dovecot, users + ghosts, concurrency=args.concurrency[0])
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
