"""quotawatch: watch mailbox quotas, warn users in time, free space by rules before mail bounces."""

__version__ = "0.1.0"
