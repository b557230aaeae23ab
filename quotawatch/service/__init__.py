"""Stage 4, service: running the stages for many accounts. ``jobs`` is the one account pipeline
(check → plan → cleanup → warn) used by the CLI and the daemon alike, ``pool`` runs it over
accounts, ``daemon`` schedules it (APScheduler), ``process`` is the process around it (signals,
``sdnotify``, watchdog, the ``http`` endpoint serving ``metrics``), ``stop`` the switch that makes
sessions refuse further commands at shutdown, ``warn`` the ``quotawatch warn`` action,
``backoff`` the pause after failed logins. Imported only by the CLI.
"""
