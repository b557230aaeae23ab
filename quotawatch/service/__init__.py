"""Stage 4, service: running the stages for many accounts. ``jobs`` is the one account pipeline
(check → plan → cleanup → warn) used by the CLI and the daemon alike, ``pool`` runs it over
accounts, ``daemon`` schedules it (APScheduler), ``process`` is the process around it (signals,
``sdnotify``, watchdog, the ``http`` endpoint serving ``metrics``), ``stop`` the switch that makes
sessions refuse further commands at shutdown, ``warn`` the ``quotawatch warn`` action,
``backoff`` the pause after failed logins. For large installations: ``directory`` reads the
account sources (files, doveadm, LDAP) and keeps their last good lists, ``fleet`` takes quotas from one
doveadm call per cycle and logs in only where needed, ``fleet_metrics`` the fleet series,
``adaptive`` (pure) and ``pacing`` when each account is checked next. Imported only by the CLI.
"""
