"""Run a CLI action so that SIGINT/SIGTERM stop it between commands, as the daemon stops, never inside one."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from quotawatch.mail.session import SessionFactory
from quotawatch.service.stop import SessionRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Stoppable(Generic[T]):
    """The result of :func:`run_stoppable`: the action's value and the signal that stopped it."""

    def __init__(self) -> None:
        self.value: T | None = None
        self.error: BaseException | None = None
        self.signal: signal.Signals | None = None

    @property
    def exit_code(self) -> int | None:
        """128 + the signal number (130 for SIGINT, 143 for SIGTERM), or None if not stopped."""
        return None if self.signal is None else 128 + int(self.signal)


def run_stoppable(
    action: Callable[[Callable[[SessionFactory], SessionFactory]], T],
) -> Stoppable[T]:
    """Run ``action(wrap)`` in a worker thread with SIGINT/SIGTERM blocked in every thread.

    ``wrap`` turns a session factory into one whose sessions refuse further commands once a
    signal came (the daemon's stop switch): the command in flight and the executor's bookkeeping
    of its batch finish, nothing further is sent, sessions log out (POP3 without QUIT). This
    (main) thread takes the signals with sigtimedwait and waits for the worker to finish.
    """
    registry = SessionRegistry()
    outcome: Stoppable[T] = Stoppable()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

    def work() -> None:
        try:
            outcome.value = action(registry.factory)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, re-raised there
            outcome.error = exc

    worker = threading.Thread(target=work, name="cleanup")
    try:
        worker.start()
        while worker.is_alive():
            info = signal.sigtimedwait(SIGNALS, 0.2)
            if info is None or outcome.signal is not None:
                continue
            outcome.signal = signal.Signals(info.si_signo)
            registry.stop()
            print(f"{outcome.signal.name}: finishing the batch in flight, then stopping "
                  "(nothing further is sent)", file=sys.stderr, flush=True)  # fmt: skip
            log.info("%s: stopping after the command in flight", outcome.signal.name)
        worker.join()
    finally:
        while signal.sigtimedwait(SIGNALS, 0) is not None:
            pass  # a second Ctrl-C while finishing must not kill us after unblocking
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if outcome.error is not None:
        raise outcome.error
    return outcome
