"""Entry point for ``python -m quotawatch``."""

from quotawatch.cli import main

raise SystemExit(main())
