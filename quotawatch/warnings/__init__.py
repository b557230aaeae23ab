"""Stage 3b, warnings: whether to warn (``decision``, pure), how soon full (``forecast``), the
mail (``render`` + ``templates``), sending it (``mailer``), the admin ``digest``, and ``notify``
which ties them to a job's report and the state. ``WarnHook`` and the daemon's ``warn_hook``
live here, so that a run without warnings never imports the rest.
Takes reports, plans and stored state; never imports a mail adapter or the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from quotawatch.config import Account, Config
    from quotawatch.config.secrets import SecretCache
    from quotawatch.model import AccountReport
    from quotawatch.retention.planner import Plan
    from quotawatch.retention.results import CleanupResult
    from quotawatch.state import State
    from quotawatch.warnings.notify import Counters


class WarnHook(Protocol):
    """Called after every job with the account, its report, its plan (or None), the job's ``now``
    and what the job's cleanup freed (so a warning mail shows the usage after it)."""

    def __call__(
        self,
        account: Account,
        report: AccountReport,
        plan: Plan | None,
        now: datetime,
        cleanup: CleanupResult | None = None,
    ) -> None: ...


def warn_hook(
    config: Config, state: State, secrets: SecretCache, counters: Counters
) -> WarnHook | None:
    """``notify.make_warn_hook``; the warning machinery (templates, mailer) is imported only
    for a config with warnings, so that a run without them starts faster."""
    if config.warnings is None or config.smtp is None:
        return None
    from quotawatch.warnings.notify import make_warn_hook

    return make_warn_hook(config, state, secrets, counters)
