"""Throw-away mail servers (Dovecot) for quotawatch's integration tests and demo."""
