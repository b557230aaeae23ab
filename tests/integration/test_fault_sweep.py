"""The standard cleanup with the connection cut after every client command in turn (IMAP and POP3):
after each cut nothing outside the plan is gone, and the next run finishes the job with each
message audited ``done`` exactly once (``uncertain`` may precede it)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quotawatch.config import Account, Config, load_config
from quotawatch.config.secrets import SecretCache
from quotawatch.config.sources import all_accounts
from quotawatch.retention.audit import AuditLog
from quotawatch.service.jobs import cleanup_account
from quotawatch.state import State
from sandbox.dovecot import Dovecot, SandboxUser
from sandbox.faultproxy import FaultProxy
from tests.integration.test_pop3 import message, server_view
from tests.integration.test_retention import deliver, raw
from tests.support import secret_file, write_config

NOW = datetime.now(UTC)
MAX_CUTS = 80  # far more commands than one small cleanup sends; a guard against looping forever
RULES: dict[str, Any] = {
    "trash-30d": {"folders": ["\\Trash"], "older_than": "30d", "age": "received"},
    "junk-14d": {"folders": ["\\Junk"], "older_than": "14d", "age": "received"},
    "pop-big": {"folders": ["INBOX"], "older_than": "60d", "age": "saved",
                "larger_than": "2KB", "allow_inbox": True},
}  # fmt: skip


def new_user(dovecot: Dovecot) -> SandboxUser:
    user = SandboxUser(f"sw{secrets.token_hex(5)}", secrets.token_urlsafe(12), dovecot)
    dovecot.add_user(user.name, user.password)
    return user


def configure(user: SandboxUser, directory: Path, state: Path, port: int, **acct: Any) -> Account:
    """The account over a plaintext port (the proxy's or the server's), state in ``state``."""
    data: dict[str, Any] = {
        "name": user.name, "host": user.dovecot.host, "port": port, "tls": "none",
        "allow_insecure_plaintext": True, "username": user.name,
        "password_file": str(secret_file(directory / "secrets", user.name, user.password)),
        "connect_timeout": 5, "timeout": 30, "max_delete_fraction": "100%", **acct,
    }  # fmt: skip
    path = write_config(directory, [data], rules=RULES, state_dir=str(state))
    config = load_config(path)
    (account,) = all_accounts(config, str(path))
    return account


def cleanup(account: Account, config: Config, now: datetime) -> Any:
    state = State(config.state_dir)
    try:
        # as if quotawatch had run an hour earlier: POP3 shows no server time, so the clock is
        # judged by the last run, and the POP3 seed jumps ahead by weeks
        state.set_clock_evidence(account.name, None, now - timedelta(hours=1))
        audit = AuditLog(config.state_dir / "audit.jsonl")
        return cleanup_account(account, config, state, audit, SecretCache(), apply=True, now=now)[1]
    finally:
        state.close()


def sweep(
    dovecot: Dovecot,
    tmp_path: Path,
    protocol: str,
    seed: Callable[[SandboxUser, Path, Path], tuple[set[Any], set[Any], datetime]],
    contents: Callable[[SandboxUser, Path], set[Any]],
    acct: dict[str, Any],
) -> int:
    """Cut after command 1, 2, ... until a run passes uncut; check each cut. Returns the cuts."""
    port = dovecot.imap_port if protocol == "imap" else dovecot.pop3_port
    for n in range(1, MAX_CUTS):
        user, work = new_user(dovecot), tmp_path / f"cut{n}"
        state = work / "state"
        planned, others, now = seed(user, work, state)
        with FaultProxy(dovecot.host, port, protocol=protocol, cut_after_command=n) as proxy:
            account = configure(user, work / "cut", state, proxy.port, **acct)
            cleanup(account, load_config(work / "cut" / "quotawatch.yaml"), now)
            proxy.wait_closed()
            cut = proxy.cut_happened
        after_cut = contents(user, work)
        assert others <= after_cut, f"cut after command {n}: something outside the plan is gone"
        account = configure(user, work / "direct", state, port, **acct)
        config = load_config(work / "direct" / "quotawatch.yaml")
        result = cleanup(account, config, now + timedelta(hours=1))
        assert result is None or result.ok, (n, result.errors)
        assert contents(user, work) == others, f"cut after command {n}: the next run did not finish"
        lines = list(AuditLog(state / "audit.jsonl").entries())
        done = Counter((e["folder"], e["uid"]) for e in lines if e["status"] == "done")
        assert done == Counter(planned), f"cut after command {n}: {done} != each planned once"
        assert {e["status"] for e in lines} <= {"intent", "uncertain", "done", "kept"}
        assert not list((state / "journal").glob("*")), f"cut after command {n}: journal open"
        if not cut:
            return n - 1
    raise AssertionError(f"still cutting after {MAX_CUTS} commands")


def imap_seed(user: SandboxUser, _work: Path, _state: Path) -> tuple[set[Any], set[Any], datetime]:
    trash = deliver(user, "Trash", [(40, "S"), (40, "S"), (40, "S"), (5, "S"), (90, "FS")])
    junk = deliver(user, "Junk", [(20, ""), (20, ""), (20, ""), (3, "")])
    planned = {("Trash", u) for u in trash[:3]} | {("Junk", u) for u in junk[:3]}
    others = {("Trash", trash[3]), ("Trash", trash[4]), ("Junk", junk[3])}
    return planned, others, NOW


def imap_contents(user: SandboxUser, _work: Path) -> set[Any]:
    found = set()
    with raw(user) as c:
        for folder in ("Trash", "Junk"):
            c.select_folder(folder, readonly=True)
            found |= {(folder, u) for u in c.search(["NOT", "DELETED"])}
    return found


def test_imap_cleanup_cut_after_every_command(dovecot: Dovecot, tmp_path: Path) -> None:
    cuts = sweep(
        dovecot, tmp_path, "imap", imap_seed, imap_contents, {"rules": ["trash-30d", "junk-14d"]}
    )
    assert cuts >= 10, "the sweep reached the deleting commands"


T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def pop_seed(user: SandboxUser, work: Path, state: Path) -> tuple[set[Any], set[Any], datetime]:
    user.dovecot.deliver_bulk(
        user.name, "INBOX", [(message(i, 3000 if i < 4 else 600), T0, "") for i in range(6)]
    )
    account = configure(user, work / "seed", state, user.dovecot.pop3_port, **POP)
    config = load_config(work / "seed" / "quotawatch.yaml")
    store = State(config.state_dir)
    try:  # a first look records first-seen times; 61 days later the big ones are due
        cleanup_account(account, config, store, AuditLog(state / "audit.jsonl"), SecretCache(),
                        apply=False, now=T0)  # fmt: skip
    finally:
        store.close()
    uidls = server_view(user, work)[2]
    return (
        {("INBOX", u) for u in uidls[:4]},
        {("INBOX", u) for u in uidls[4:]},
        T0 + timedelta(days=61),
    )


def pop_contents(user: SandboxUser, work: Path) -> set[Any]:
    return {("INBOX", u) for u in server_view(user, work)[2]}


POP = {"protocol": "pop3", "rules": ["pop-big"], "quota": "10MB", "min_on_server": "7d"}


def test_pop3_cleanup_cut_after_every_command(dovecot: Dovecot, tmp_path: Path) -> None:
    cuts = sweep(dovecot, tmp_path, "pop3", pop_seed, pop_contents, POP)
    assert cuts >= 10, "the sweep reached DELE and QUIT"
