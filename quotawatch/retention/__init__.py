"""Stage 3a, retention: rules → candidates → plan (pure) → execution, with archive and audit.

Takes a logged-in ``MailboxSession`` (through the interface only), its ``Snapshot`` and the
account's rules; gives a ``Plan`` (``planner``, a pure function of plain data and ``now``) and,
when applied, a ``CleanupResult`` (``executor``, ``results``), every batch journaled before the
server is touched (``journal``), every removal in the audit log (``audit``), what an interrupted
run left open settled at the next (``reconcile``), and archive copies verified before deletion
(``archive``). ``rules`` gathers the
candidates a rule's folders hold; ``client_guard`` is the POP3 client protection. Never imports
an adapter (``quotawatch.mail.imap``/``pop3``/``connect``), warnings or service.
"""
