"""The IMAP adapter: ``session`` (TLS, login, quota, folders), ``retention`` (candidate search,
UID-exact delete and move), ``wire`` (the lean bounded reader and parsers), ``client`` (the
imapclient subclass). Only ``quotawatch.mail.connect`` and the POP3 adapter import it."""
