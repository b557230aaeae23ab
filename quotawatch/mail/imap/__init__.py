"""The IMAP adapter: ``session`` (TLS, login, quota, folders), ``retention`` (candidate search,
metadata and body fetches) and ``removal`` (UID-exact, change-checked delete and move), which the
session owns as base classes; ``wire`` (the lean bounded reader and FETCH/LIST/STATUS/QUOTA
parsers), ``searches`` (SEARCH/ESEARCH answers, UID sets), ``fallback`` (imapclient's parser,
response by response), ``client`` (the imapclient subclass), ``errors`` and ``syntax``. Only
``quotawatch.mail.connect`` and the POP3 adapter import it."""
