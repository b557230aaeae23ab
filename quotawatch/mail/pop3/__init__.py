"""The POP3 adapter: ``session`` (UIDL identity, STAT sizes, DELE committed only at QUIT) and
``wire`` (the poplib client with verified TLS and the pure response parsers). Only
``quotawatch.mail.connect`` imports it."""
