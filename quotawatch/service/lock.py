"""One worker per mailbox: an exclusive flock on a file in ``state_dir/locks``, freed by the OS when its process dies."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from quotawatch.config import Account
from quotawatch.errors import MailboxLocked, StateError

#: seconds between two tries while another worker holds the lock
POLL = 0.05


def mailbox_key(account: Account) -> str:
    """What names one mailbox: the server (host in lower case) and whose mailbox it is: the
    ``authorize_as`` user when an admin logs in for one, else the username without a Dovecot
    master-user suffix (``alice*admin`` is alice's mailbox). Protocol, port, account names and
    passwords play no part: an IMAP and a POP3 entry for one mailbox, or two entries logging in
    differently, share the key."""
    owner = account.authorize_as or account.username.split("*", 1)[0]
    return hashlib.sha256(f"{account.host.lower()}\0{owner}".encode()).hexdigest()[:32]


def lock_path(state_dir: Path, account: Account) -> Path:
    """The lock file of ``account``'s mailbox below ``state_dir``."""
    return state_dir / "locks" / f"{mailbox_key(account)}.lock"


class MailboxLock:
    """An exclusive ``flock`` on the mailbox's lock file, held from :meth:`acquire` to :meth:`release`.

    flock belongs to the open file, so it excludes other processes and other threads of this
    one alike, and the kernel drops it when the process ends however it ends: a stale lock
    cannot outlive its holder, and the file itself is left in place on purpose (removing it
    would let a third worker lock a new file while the second waits on the old one).
    """

    def __init__(
        self,
        state_dir: Path,
        account: Account,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account = account.name
        self.path = lock_path(state_dir, account)
        self._clock = clock
        self._sleep = sleep
        self._fd: int | None = None

    def acquire(self, wait: float) -> None:
        """Take the lock, waiting up to ``wait`` seconds for another worker.

        Raises MailboxLocked if it is still held then, StateError if the lock file cannot be made.
        """
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the first lock below this state_dir (or it was removed)
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(self.account, str(self.path), exc) from None
        deadline = self._clock() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if self._clock() >= deadline:
                    os.close(fd)
                    raise MailboxLocked(self.account, wait) from None
                self._sleep(POLL)
        self._fd = fd
        with contextlib.suppress(OSError):  # for a curious admin: who holds it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Let the next worker in (closing the file drops the flock)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
