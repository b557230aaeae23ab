"""Stage 2, mail: the one small interface to a mailbox (``session``) and its adapters.

Takes an ``Account`` and its password; gives a logged-in ``MailboxSession`` (quota, folders with
sizes, candidate search, UID-exact delete/move, message fetch) and a ``Snapshot`` of it.
``session`` holds only the interface and plain data; ``connect`` is the factory that picks an
adapter (``imap/``, ``pop3/``); ``limits`` bounds what any server may cost them (caps on lines,
literals and answers; a deadline per command and per account job); ``doveadm`` is the
server-side access of large installations (every user, every user's quota in one call), and
``ldap`` reads the users of an LDAP directory (python-ldap, the ``ldap`` extra, imported lazily);
both used by the service only. Nothing outside this package imports imapclient, poplib or
python-ldap, and the interface
module never imports an adapter, so the planner can use its types without them.
Never imports retention, warnings or service.
"""
