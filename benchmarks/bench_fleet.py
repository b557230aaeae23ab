"""Benchmark: a fleet from one host — one cycle via doveadm vs via IMAP logins, daemon RSS, scrape cost.

Run as root from the repository root (it starts a throw-away sandbox Dovecot with its doveadm
HTTP API on loopback):

    python benchmarks/bench_fleet.py [--accounts 10000] [--full 200] [--configured 100000]
    python benchmarks/bench_fleet.py --accounts 100000 --full 2000 --no-imap --arena-max 0

Every account comes from the doveadm source (user list over the HTTP API). ``--full`` of them
hold 85 % of their 1 MiB quota, the others are empty. In one run it measures:

1. ``run --once`` with ``quota_source: imap`` (one master-user login per account), then with
   ``quota_source: doveadm`` on the same state (folders fresh, so only accounts at or above
   ``imap_when_above`` log in): wall time, quotawatch CPU, Dovecot CPU, logins;
2. the daemon with that config: RSS after READY=1, after one cycle and after the scrapes;
   the median time of 7 scrapes, size and series count (default ``metrics.per_account``);
   then the same with ``MALLOC_ARENA_MAX=2`` (``--arena-max``: glibc's arenas per thread);
3. the daemon's RSS after start-up with ``--configured`` accounts (a usernames file; they need
   not exist);
4. logins per fixed interval under ``schedule.adaptive`` for a simulated fleet (most below 50 %,
   a tail above 80 %), from ``adaptive.next_delay``, against one per account with the fixed
   interval.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_check import daemon_memory, free_port, quotawatch, rss_kib, run_once  # noqa: E402

from quotawatch.service.adaptive import next_delay  # noqa: E402
from sandbox.dovecot import Dovecot, make_base_dir  # noqa: E402

QUOTA = 1024 * 1024
#: seconds for doveadm's answers: a quotaGet of 10,000 users on a machine shared with other
#: work can take longer than the default 120 s
DOVEADM_TIMEOUT = 600
#: scrapes of /metrics after the cycle (their median is reported: wall times are noisy)
SCRAPES = 7


def message(size: int) -> bytes:
    head = "From: a@example.org\r\nTo: b@example.org\r\nSubject: fleet\r\n\r\n"
    return head.encode() + b"x" * (size - len(head) - 2) + b"\r\n"


def write_config(work: Path, dovecot: Dovecot, state: Path, quota_source: str, **top: Any) -> Path:
    secret = work / "master.secret"
    secret.write_text(dovecot.master_password)
    secret.chmod(0o600)
    data: dict[str, Any] = {
        "state_dir": str(state),
        "account_sources": [{
            "name": "fleet",
            "doveadm": {"url": dovecot.doveadm_url, "api_key_file": str(dovecot.doveadm_key_file),
                        "ca_file": str(dovecot.ca_file), "user_mask": "fleet*",
                        "timeout": DOVEADM_TIMEOUT},
            "template": {"host": dovecot.host, "port": dovecot.imaps_port,
                         "ca_file": str(dovecot.ca_file), "username": f"{{user}}*{dovecot.master_user}",
                         "password_file": str(secret), "quota_source": quota_source,
                         "doveadm": {"url": dovecot.doveadm_url,
                                     "api_key_file": str(dovecot.doveadm_key_file),
                                     "ca_file": str(dovecot.ca_file), "timeout": DOVEADM_TIMEOUT},
                         "imap_when_above": "70%", "folders_every": "1d"},
        }],
        "schedule": {"interval": "1h", "jitter": "0s", "concurrency": 16},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        **top,
    }  # fmt: skip
    if quota_source == "imap":
        del data["account_sources"][0]["template"]["doveadm"]
    path = work / f"quotawatch-{quota_source}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def ready_rss(config: Path) -> tuple[float, float]:
    """Seconds until READY=1 and the RSS (MiB) then, for a daemon that is stopped right after."""
    sockdir = Path(tempfile.mkdtemp(prefix="qw-fleet-"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sockdir / "notify"))
    notify.settimeout(600)
    env = dict(os.environ, NOTIFY_SOCKET=str(sockdir / "notify"))
    started = time.perf_counter()
    proc = subprocess.Popen([*quotawatch(), "--log-level", "warning", "run", "--config",
                             str(config)], cwd=REPO, env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        return time.perf_counter() - started, rss_kib(proc.pid) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        notify.close()
        shutil.rmtree(sockdir, ignore_errors=True)


def adaptive_logins(count: int, seed: int = 7) -> tuple[float, dict[str, int]]:
    """Checks per fixed interval under schedule.adaptive for a simulated fleet (per account:
    ``interval / delay``), and how the fleet was drawn."""
    rng = random.Random(seed)
    interval, max_interval = timedelta(minutes=15), timedelta(hours=6)
    levels = [0.8, 0.9, 0.95, 1.0]
    total, bands = 0.0, {"<50%": 0, "50-80%": 0, ">=80%": 0, "no history": 0}
    for _ in range(count):
        draw = rng.random()
        if draw < 0.75:
            ratio, band = rng.uniform(0, 0.5), "<50%"
        elif draw < 0.95:
            ratio, band = rng.uniform(0.5, 0.8), "50-80%"
        else:
            ratio, band = rng.uniform(0.8, 1.0), ">=80%"
        growth = rng.lognormvariate(-6, 1.5)  # median 0.25 % of the quota per day
        if rng.random() < 0.02:
            growth, band = None, "no history"  # new accounts: the fixed interval
        bands[band] += 1
        total += interval / next_delay(ratio, growth, levels, interval, max_interval)
    return total, bands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--full", type=int, default=200)
    parser.add_argument("--configured", type=int, default=100_000)
    parser.add_argument("--arena-max", type=int, default=2,
                        help="also run the daemon with MALLOC_ARENA_MAX=N (0: do not)")  # fmt: skip
    parser.add_argument("--no-imap", action="store_true",
                        help="skip the cycle with quota_source: imap (one login per account)")  # fmt: skip
    args = parser.parse_args()

    base = make_base_dir("qw-fleet-")
    work = Path(tempfile.mkdtemp(prefix="qw-fleet-work-"))
    dovecot = Dovecot(base, name="fleet", doveadm_api=True).start()
    try:
        users = [f"fleet{i:06d}" for i in range(args.accounts)]
        t0 = time.perf_counter()
        dovecot.add_users([(u, "unused-pw", QUOTA, None) for u in users])
        when = datetime.now(UTC) - timedelta(days=3)
        for user in users[: args.full]:
            dovecot.deliver_bulk(user, "INBOX", [(message(int(QUOTA * 0.85)), when, "S")])
        print(f"set up {len(users)} mailboxes ({args.full} at 85 %) in "
              f"{time.perf_counter() - t0:.1f}s")  # fmt: skip

        state = work / "state"
        imap = (
            None if args.no_imap else run_once(write_config(work, dovecot, state, "imap"), dovecot)
        )
        dove = run_once(write_config(work, dovecot, state, "doveadm"), dovecot)
        print(
            f"\none cycle of {args.accounts} accounts ({os.cpu_count()} CPUs shared with Dovecot)"
        )
        for name, r, logins in (("IMAP logins", imap, args.accounts),
                                ("doveadm quotaGet", dove, args.full)):  # fmt: skip
            if r is not None:
                print(f"  {name:17} {r[0]:7.1f}s wall, {r[1]:6.1f}s quotawatch CPU, "
                      f"{r[3]:6.1f}s Dovecot CPU, {logins} logins")  # fmt: skip
        if imap is not None:
            print(f"  ratio IMAP / doveadm: {imap[0] / dove[0]:.1f}x wall, "
                  f"{(imap[1] + imap[3]) / (dove[1] + dove[3]):.1f}x CPU (both sides)")  # fmt: skip

        for arenas in [0, args.arena_max] if args.arena_max else [0]:  # 0: glibc's default
            copy = work / f"state-daemon-{arenas}"
            shutil.copytree(state, copy)
            with sqlite3.connect(copy / "state.sqlite3") as db:  # due now, folders still fresh
                db.execute("UPDATE reports SET taken_at = taken_at - 7200")
            env = {"MALLOC_ARENA_MAX": str(arenas)} if arenas else None
            mem = daemon_memory(write_config(work, dovecot, copy, "doveadm"), args.accounts,
                                env, scrapes=SCRAPES)  # fmt: skip
            print(f"\ndaemon, {args.accounts} accounts, quota_source doveadm, default per_account"
                  + (f", MALLOC_ARENA_MAX={arenas}" if arenas else ""))  # fmt: skip
            print(
                f"  READY=1 after {mem['ready_seconds']:.1f}s, RSS {mem['rss_start_mib']:.1f} MiB"
            )
            print(f"  one cycle {mem['cycle_seconds']:.1f}s, "
                  f"RSS after it {mem['rss_cycle_mib']:.1f} MiB")  # fmt: skip
            spread = ", ".join(f"{s * 1000:.0f}" for s in mem["scrape_all"])
            print(f"  /metrics: {mem['scrape_bytes'] / 1e3:.0f} kB, {mem['series']} series, "
                  f"median of {SCRAPES} scrapes {mem['scrape_seconds'] * 1000:.0f} ms "
                  f"({spread} ms); RSS after them {mem['rss_after_scrape_mib']:.1f} MiB")  # fmt: skip

        names = work / "configured.txt"
        names.write_text("".join(f"ghost{i:06d}\n" for i in range(args.configured)))
        many = write_config(work, dovecot, work / "state-many", "doveadm")
        data = yaml.safe_load(many.read_text())
        source = data["account_sources"][0]
        source["usernames_file"] = str(names)
        source["template"]["doveadm"] = source.pop("doveadm")
        many.write_text(yaml.safe_dump(data))
        seconds, rss = ready_rss(many)
        print(f"\ndaemon with {args.configured} configured accounts: READY=1 after {seconds:.1f}s, "
              f"RSS {rss:.1f} MiB")  # fmt: skip

        checks, bands = adaptive_logins(args.accounts)
        print(f"\nschedule.adaptive, simulated fleet of {args.accounts} {bands}: "
              f"{checks:.0f} checks per 15-minute interval vs {args.accounts} fixed "
              f"({checks / args.accounts:.1%})")  # fmt: skip
    finally:
        dovecot.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
