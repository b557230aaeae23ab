"""OAuth2 sign-in for mail sessions: token acquisition (``providers``), caching (``tokens``), SASL messages (``sasl``).

Takes the ``oauth2:`` settings and a mailbox; gives a valid access token (a ``SecretStr``) and
the SASL XOAUTH2 / OAUTHBEARER client responses that carry it. The vendor libraries (msal,
google-auth, authlib) are imported only when a token is fetched, so the package works without the
``oauth2`` extra until an account uses it. Never imports an IMAP or POP3 adapter.
"""
