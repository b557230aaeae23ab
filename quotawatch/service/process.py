"""The process around the Daemon: blocked signals taken by the main thread, systemd notify, /metrics, watchdog."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping

from quotawatch.errors import QuotawatchError
from quotawatch.service.daemon import Daemon
from quotawatch.service.sdnotify import Notifier, Watchdog, watchdog_interval

log = logging.getLogger(__name__)

SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
STATUS_EVERY = 10.0


def serve(config_path: str, *, once: bool = False, environ: Mapping[str, str] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (or, with ``once``, until every account ran once).

    Signals are blocked in every thread and taken by this (main) thread with sigtimedwait, so a
    signal never interrupts a job in the middle of a command.
    """
    env = os.environ if environ is None else environ
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    notifier = Notifier(env)
    try:
        daemon = Daemon(config_path)
        if logging.getLogger().level > logging.DEBUG:  # one line per account, not three
            for name in ("apscheduler.scheduler", "apscheduler.executors.default", "imapclient"):
                logging.getLogger(name).setLevel(logging.WARNING)
        if once:
            return _serve_once(daemon)
        from prometheus_client.registry import CollectorRegistry  # not needed by --once

        from quotawatch.service.http import MetricsServer

        registry = CollectorRegistry(auto_describe=False)
        registry.register(daemon.collector)
        server = MetricsServer(daemon.runtime.config.metrics, registry, daemon.healthy)
        try:
            server.start()
        except (OSError, QuotawatchError) as exc:
            log.error("cannot serve metrics on %s: %s", daemon.runtime.config.metrics.listen, exc)
            return 1
        daemon.start()
        notifier.ready(daemon.status_line())
        interval = watchdog_interval(env)
        watchdog = Watchdog(notifier, interval, daemon.healthy) if interval else None
        if watchdog is not None:
            watchdog.start()
        _loop(daemon, notifier)
        notifier.stopping("stopping: logging out of open sessions")
        finished = daemon.stop()
        server.stop()
        if watchdog is not None:
            watchdog.stop()
        log.info("stopped")
        return _exit(0, finished)
    finally:
        notifier.close()
        while signal.sigtimedwait(SIGNALS, 0) is not None:
            pass  # drop signals that came too late, so unblocking them cannot kill us
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _loop(daemon: Daemon, notifier: Notifier) -> None:
    last_status, status_at = "", 0.0
    while True:
        info = signal.sigtimedwait(SIGNALS, 1.0)
        if info is not None and info.si_signo == signal.SIGHUP:
            log.info("SIGHUP: reloading %s", daemon.config_path)
            notifier.reloading("reloading the config")
            try:
                ok = daemon.reload()
            except Exception:
                log.exception("reload failed; still running the previous config")
                ok = False
            prefix = "" if ok else "reload rejected (see log), previous config kept; "
            notifier.ready(prefix + daemon.status_line())
        elif info is not None:
            log.info("%s: stopping", signal.Signals(info.si_signo).name)
            return
        line = daemon.status_line()
        if line != last_status and time.monotonic() - status_at >= STATUS_EVERY:
            notifier.status(line)
            last_status, status_at = line, time.monotonic()


def _serve_once(daemon: Daemon) -> int:
    count = len(daemon.runtime.accounts)
    daemon.start(once=True)

    def signalled() -> bool:
        info = signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 0)
        if info is not None:
            log.info("%s: stopping", signal.Signals(info.si_signo).name)
        return info is not None

    results = daemon.once_results(count, signalled)
    failed = sum(1 for r in results if r is None or not r.ok) + (count - len(results))
    finished = daemon.stop()
    log.info("run --once: %d accounts, %d ok, %d failed", count, count - failed, failed)
    return _exit(0 if failed == 0 else 1, finished)


def _exit(code: int, finished: bool) -> int:
    """``code``, or end the process at once if job threads are stuck in network reads.

    Nothing is lost that way: IMAP changes are final per command and never need CLOSE; POP3
    deletions without QUIT are undone by the server.
    """
    if not finished:
        logging.shutdown()
        os._exit(code)
    return code
