"""The per-mailbox lock: one key per server and mailbox owner, exclusive across threads and processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from quotawatch.config import Account
from quotawatch.config.sources import select_accounts
from quotawatch.errors import MailboxLocked, StateError
from quotawatch.service.lock import MailboxLock, lock_path, mailbox_key


def account(**kw: Any) -> Account:
    data = {"name": "a", "host": "mail.example.org", "username": "alice", "password_file": "/p"}
    return Account.model_validate({**data, **kw})


class FakeClock:
    """Time moves only when the lock sleeps: a wait ends after exactly the polls it allows."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def test_the_key_names_the_mailbox_not_the_entry() -> None:
    alice = account()
    same = [
        alice,
        account(name="b", host="MAIL.example.org", password_file="/q"),
        account(name="pop", protocol="pop3", port=995),  # one mailbox, another protocol
        account(name="master", username=f"{alice.username}*admin"),  # a master user for alice
        account(name="authz", username="admin", authorize_as=alice.username),
    ]
    assert len({mailbox_key(a) for a in same}) == 1
    others = [account(username="bob"), account(host="other.example.org"),
              account(authorize_as="carol")]  # fmt: skip
    assert len({mailbox_key(a) for a in [alice, *others]}) == 4


def test_a_second_holder_waits_then_gives_up_and_gets_it_once_free(tmp_path: Path) -> None:
    first = MailboxLock(tmp_path, account())
    first.acquire(0)
    clock = FakeClock()
    second = MailboxLock(tmp_path, account(name="twin"), clock=clock, sleep=clock.sleep)
    with pytest.raises(MailboxLocked, match=r"^twin: locked: .* after waiting 1s$"):
        second.acquire(1.0)  # another open file of the same process: excluded too
    assert clock.sleeps >= 1 and clock.now >= 1.0
    first.release()
    second.acquire(0)
    second.release()
    assert lock_path(tmp_path, account()).exists()


def test_a_dead_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = lock_path(tmp_path, account())
    path.parent.mkdir(parents=True)
    holder = (
        "import fcntl, os, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); os._exit(9)"  # dies holding it, no clean-up
    )
    done = subprocess.run([sys.executable, "-c", holder, str(path)], capture_output=True, text=True)
    assert done.stdout == "held\n" and done.returncode == 9
    lock = MailboxLock(tmp_path, account())
    lock.acquire(0)
    lock.release()


def test_an_unusable_state_dir_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "locks").write_text("a file where the directory should be")
    with pytest.raises(StateError) as info:
        MailboxLock(tmp_path, account()).acquire(0)
    assert info.value.reason == "state"


def test_an_account_named_twice_on_the_command_line_runs_once() -> None:
    accounts = [account(name="a"), account(name="b", username="bob")]
    assert [a.name for a in select_accounts(accounts, ["b", "a", "b", "a"])] == ["b", "a"]
