"""The systemd notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) over $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address from $NOTIFY_SOCKET: a path, or ``@name`` for an abstract socket."""
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None without a watchdog."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wanted_pid = environ.get("WATCHDOG_PID", "")
    if wanted_pid and wanted_pid != str(pid if pid is not None else os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends state changes to the service manager; does nothing when not run by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.address = notify_address(os.environ if environ is None else environ)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; failures are logged, never raised."""
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(message, self.address)
            except OSError as exc:
                log.warning("cannot notify the service manager: %s", exc)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with the MONOTONIC_USEC stamp that Type=notify-reload wants."""
        stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        extra = [f"STATUS={status}"] if status else []
        return self.send("RELOADING=1", f"MONOTONIC_USEC={stamp}", *extra)

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Watchdog:
    """A thread that sends WATCHDOG=1 every ``interval`` seconds while ``alive()`` is true."""

    def __init__(self, notifier: Notifier, interval: float, alive: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.interval = interval
        self.alive = alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.alive():
                self.notifier.watchdog()
            else:
                log.error("scheduler is not running; withholding the watchdog ping")
            self._stop.wait(self.interval)
