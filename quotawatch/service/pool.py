"""Run one function over many accounts, up to a bound at once, results in config order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from quotawatch.config import Account

T = TypeVar("T")


def per_account(
    fn: Callable[[Account], T], accounts: Sequence[Account], concurrency: int, name: str
) -> Iterator[T]:
    """``fn`` of every account, in config order, up to ``concurrency`` accounts at once."""
    workers = min(concurrency, len(accounts))
    if workers <= 1:
        yield from map(fn, accounts)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        yield from pool.map(fn, accounts)
