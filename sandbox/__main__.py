"""``python -m sandbox demo-up DIR`` / ``demo-down DIR`` / ``demo-status DIR``.

``demo-up`` starts a persistent (daemonized) sandbox Dovecot below DIR, creates the
demo users alice, bob and carol, fills their mailboxes with seeded, realistic mail
(only on the first start, or with ``--reset``, which also stops a running sandbox and
wipes DIR first) and writes:

* ``DIR/sandbox.json`` -- host, ports, CA file, users and passwords (mode 0600);
* ``DIR/secrets/<user>`` and ``DIR/secrets/admin`` -- one password each, no newline
  (mode 0600), for configs that reference password files.

DIR must be short and world-traversable when run as root (see sandbox.dovecot);
``demo-state/`` in the repository root qualifies and is git-ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox.corpus import PEOPLE, Person, make_message, plan_sizes, random_date
from sandbox.dovecot import Dovecot, SandboxError

MIB = 1024 * 1024
SEED = 20240601
FILLED_MARKER = ".demo-filled"


@dataclass(frozen=True)
class FolderPlan:
    name: str
    count: int
    kind: str  # subject style, see sandbox.corpus.SUBJECTS
    start_days_ago: int | None  # None: use fixed_range
    end_days_ago: int = 0
    fixed_range: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class DemoUser:
    name: str
    quota_bytes: int
    fill_ratio: float
    max_size: int
    folders: tuple[FolderPlan, ...]


YEAR_2023 = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))

DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser(
        "alice",
        20 * MIB,
        0.85,
        50_000,
        (
            FolderPlan("INBOX", 600, "inbox", 3 * 365),
            FolderPlan("Trash", 300, "inbox", 3 * 365, 365),
            FolderPlan("Junk", 200, "junk", 365),
            FolderPlan("Sent", 100, "sent", 3 * 365),
            FolderPlan("Archive/2023", 150, "inbox", None, fixed_range=YEAR_2023),
            FolderPlan("Entwürfe", 20, "drafts", 60),
        ),
    ),
    DemoUser("bob", 50 * MIB, 0.30, 250_000, (FolderPlan("INBOX", 400, "inbox", 2 * 365),)),
    DemoUser(
        "carol",
        10 * MIB,
        0.95,
        120_000,
        (
            FolderPlan("INBOX", 350, "inbox", 2 * 365),
            FolderPlan("Sent", 50, "sent", 2 * 365),
            FolderPlan("Trash", 60, "inbox", 2 * 365, 30),
        ),
    ),
)


def _flags(rng: random.Random, kind: str, folder: str, age_days: float) -> str:
    if folder == "Trash" or kind == "sent":
        return "S"
    if kind == "drafts":
        return "DS"
    if kind == "junk":
        return "S" if rng.random() < 0.2 else ""
    flags = "S" if age_days > 30 or rng.random() < 0.6 else ""
    if rng.random() < 0.05:
        flags += "F"
    if "S" in flags and rng.random() < 0.1:
        flags += "R"
    return flags


def _me(name: str) -> Person:
    return next(
        (p for p in PEOPLE if p[1].startswith(name + "@")), (name.title(), f"{name}@example.org")
    )


def fill_user(dovecot: Dovecot, plan: DemoUser, today: datetime) -> None:
    """Deliver the seeded demo corpus for *plan* (sizes add up to fill_ratio of quota)."""
    rng = random.Random(f"{SEED}:{plan.name}")
    total = int(plan.quota_bytes * plan.fill_ratio)
    count = sum(f.count for f in plan.folders)
    sizes = plan_sizes(rng, count, total, 700, plan.max_size)
    me = _me(plan.name)
    others = [p for p in PEOPLE if p != me]
    index = 0
    for folder in plan.folders:
        if folder.fixed_range is not None:
            start, end = folder.fixed_range
        else:
            assert folder.start_days_ago is not None
            start = today - timedelta(days=folder.start_days_ago)
            end = today - timedelta(days=folder.end_days_ago)
        dates = sorted(random_date(rng, start, end) for _ in range(folder.count))
        batch: list[tuple[bytes, datetime, str]] = []
        for date in dates:
            other = rng.choice(others)
            sender, recipient = (me, other) if folder.kind in ("sent", "drafts") else (other, me)
            data = make_message(
                rng,
                size=sizes[index],
                date=date,
                sender=sender,
                recipient=recipient,
                kind=folder.kind,
            )
            index += 1
            age = (today - date).total_seconds() / 86400
            batch.append((data, date, _flags(rng, folder.kind, folder.name, age)))
        dovecot.deliver_bulk(plan.name, folder.name, batch)


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    path.chmod(0o600)


def _read_or_make_secret(path: Path) -> str:
    if path.exists():
        value = path.read_text()
        if value:
            return value
    value = secrets.token_urlsafe(12)
    _write_secret(path, value)
    return value


def demo_up(directory: Path, *, reset: bool = False) -> int:
    directory = directory.absolute()
    dovecot = Dovecot(directory, name="demo", stop_at_exit=False)
    if dovecot.running:
        if not reset:
            print(f"demo sandbox already running in {directory}; see {directory / 'sandbox.json'}")
            return 0
        dovecot.stop()  # --reset: start again from fresh sample mailboxes
        dovecot = Dovecot(directory, name="demo", stop_at_exit=False)
    if reset and directory.exists():
        if not (directory / "dovecot.conf").exists() and any(directory.iterdir()):
            print(f"refusing to wipe {directory}: it does not look like a sandbox dir")
            return 2
        shutil.rmtree(directory)
    if not directory.exists():
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    dovecot.start()
    try:
        secrets_dir = directory / "secrets"
        users: dict[str, dict[str, object]] = {}
        for plan in DEMO_USERS:
            password = _read_or_make_secret(secrets_dir / plan.name)
            dovecot.add_user(plan.name, password, quota_bytes=plan.quota_bytes)
            users[plan.name] = {
                "password": password,
                "password_file": str(secrets_dir / plan.name),
                "quota_bytes": plan.quota_bytes,
            }
        _write_secret(secrets_dir / dovecot.master_user, dovecot.master_password)

        marker = directory / FILLED_MARKER
        if not marker.exists():
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            for plan in DEMO_USERS:
                fill_user(dovecot, plan, today)
            marker.write_text(today.isoformat())
        for name, info in users.items():
            used, limit = dovecot.quota_get(name)["STORAGE"]
            info["quota_used_kib"] = used
            pct = 100 * used / limit if limit else 0.0
            print(f"{name:6} {used:>7} KiB of {limit} KiB ({pct:.0f}%)")

        info_doc = {
            "host": dovecot.host,
            "imap_port": dovecot.imap_port,
            "imaps_port": dovecot.imaps_port,
            "pop3_port": dovecot.pop3_port,
            "pop3s_port": dovecot.pop3s_port,
            "ca_file": str(dovecot.ca_file),
            "other_ca_file": str(dovecot.other_ca_file),
            "master_user": dovecot.master_user,
            "master_password": dovecot.master_password,
            "master_password_file": str(secrets_dir / dovecot.master_user),
            "users": users,
            "log_file": str(dovecot.log_file),
            "conf_file": str(dovecot.conf_file),
        }
        _write_secret(directory / "sandbox.json", json.dumps(info_doc, indent=2) + "\n")
    except BaseException:
        dovecot.stop()
        raise
    print(
        f"demo Dovecot running: IMAP {dovecot.host}:{dovecot.imap_port} (STARTTLS), "
        f"IMAPS :{dovecot.imaps_port}, POP3 :{dovecot.pop3_port} (STLS), "
        f"POP3S :{dovecot.pop3s_port}"
    )
    print(
        f"details: {directory / 'sandbox.json'}; stop with: python -m sandbox demo-down {directory}"
    )
    return 0


def demo_down(directory: Path) -> int:
    dovecot = Dovecot(directory.absolute(), name="demo", stop_at_exit=False)
    if not dovecot.running:
        print(f"no demo sandbox running in {directory}")
        return 0
    dovecot.stop()
    print(f"demo sandbox in {directory} stopped")
    return 0


def demo_status(directory: Path) -> int:
    dovecot = Dovecot(directory.absolute(), name="demo", stop_at_exit=False)
    info = directory / "sandbox.json"
    state = "running" if dovecot.running else "stopped"
    print(f"demo sandbox in {directory}: {state}")
    if dovecot.running and info.exists():
        print(info.read_text(), end="")
    return 0 if dovecot.running else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("demo-up", help="start the demo Dovecot and fill the demo mailboxes")
    up.add_argument("dir", type=Path)
    up.add_argument(
        "--reset", action="store_true", help="stop a running sandbox, wipe DIR and refill"
    )
    down = sub.add_parser("demo-down", help="stop the demo Dovecot")
    down.add_argument("dir", type=Path)
    status = sub.add_parser("demo-status", help="exit 0 and print sandbox.json if running")
    status.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo-up":
            return demo_up(args.dir, reset=args.reset)
        if args.command == "demo-down":
            return demo_down(args.dir)
        return demo_status(args.dir)
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
