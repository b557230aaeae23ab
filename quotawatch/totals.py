"""Running aggregates of the compact metric rows, kept exact, so a scrape reads sums, not rows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: a row's part in the aggregates, as SQLite returns it: ok, reason, ratio, used and limit bytes
Part = tuple[Any, Any, Any, Any, Any]

#: every finite float (and every int) is a whole multiple of 2**-1074, the smallest subnormal
_SCALE = 1074


class Inexact(ValueError):
    """Raised when a row holds a number the exact sums cannot carry (infinity or NaN)."""

    def __init__(self, value: object) -> None:
        super().__init__(f"metric row value {value!r} is not a finite number")


def exact(value: float | int) -> int:
    """``value`` in units of 2**-1074: sums of these are exact, whatever the order."""
    if isinstance(value, int):
        return value << _SCALE
    if not math.isfinite(value):
        raise Inexact(value)
    num, den = value.as_integer_ratio()  # den is a power of two up to 2**1074
    return num << (_SCALE - den.bit_length() + 1)


def rounded(total: int) -> float:
    """The float nearest to an exact sum (int / int division rounds correctly)."""
    return total / (1 << _SCALE)


@dataclass(slots=True)
class Tally:
    """Aggregates of a set of metric rows: what ``State.fleet_summary`` and one group of
    ``State.source_summaries`` report, each kept exact (counts, and sums in 2**-1074 units)."""

    bounds: tuple[float, ...]
    level: float
    rows: int = 0
    at_or_below: list[int] = field(default_factory=list)
    count: int = 0
    ratio_sum: int = 0
    used: int = 0
    limit: int = 0
    exported: int = 0
    failing: dict[str, int] = field(default_factory=dict)
    configured: int = 0

    def __post_init__(self) -> None:
        self.at_or_below = [0] * len(self.bounds)

    def add(self, part: Part, sign: int = 1) -> None:
        """Add (``sign`` 1) or take away (-1) one row, with SQL's meaning of each aggregate:
        NULLs count nowhere, ``exported`` is ``ratio >= level OR ok = 0``."""
        self.apply(Share.of(part, self.bounds, self.level), sign)

    def apply(self, share: Share, sign: int) -> None:
        self.rows += sign
        if share.has_ratio:
            self.count += sign
            self.ratio_sum += sign * share.ratio
            for i, below in enumerate(share.bands):
                if below:
                    self.at_or_below[i] += sign
        self.used += sign * share.used
        self.limit += sign * share.limit
        self.exported += sign * share.exported
        if share.failing is not None:
            left = self.failing.get(share.failing, 0) + sign
            if left:
                self.failing[share.failing] = left
            else:
                del self.failing[share.failing]


@dataclass(frozen=True, slots=True)
class Share:
    """One row's part in a tally, computed once for the fleet's and its group's."""

    has_ratio: bool
    ratio: int  # exact
    bands: tuple[bool, ...]
    used: int  # exact
    limit: int  # exact
    exported: int
    failing: str | None  # the reason of a failing row

    @classmethod
    def of(cls, part: Part, bounds: tuple[float, ...], level: float) -> Share:
        ok, reason, ratio, used, limit = part
        has = ratio is not None
        return cls(
            has,
            exact(ratio) if has else 0,
            tuple(ratio <= b for b in bounds) if has else (),
            exact(used) if used is not None else 0,
            exact(limit) if limit is not None else 0,
            int(ok == 0 or (has and ratio >= level)),
            ("internal" if reason is None else str(reason)) if ok == 0 else None,
        )


@dataclass
class Totals:
    """The fleet's tally and one per (source, host) of the configured accounts."""

    bounds: tuple[float, ...]
    level: float | None
    fleet: Tally
    groups: dict[tuple[str, str], Tally]

    @classmethod
    def build(
        cls,
        bounds: Sequence[float],
        level: float | None,
        rows: Iterable[tuple[Any, ...]],
        configured: Iterable[tuple[str, str, int]],
    ) -> Totals:
        """From every metric row as (ok, reason, ratio, used, limit, source, host), source and
        host NULL for an account without a group, and the configured accounts per group."""
        lv = level if level is not None else 0.0
        totals = cls(tuple(bounds), level, Tally(tuple(bounds), lv), {})
        for source, host, n in configured:
            totals.groups[(str(source), str(host))] = Tally(totals.bounds, lv, configured=n)
        for *part, source, host in rows:
            totals.update(None, (source, host), tuple(part))
        return totals

    def update(self, old: Part | None, group: tuple[Any, Any] | None, new: Part | None) -> None:
        """One row replaced (``old`` -> ``new``; None where there is none) of an account in
        ``group`` (None or (None, None) if it has none)."""
        if old == new:
            return
        tallies = [self.fleet]
        if group is not None and group[0] is not None:
            tallies.append(self.groups[(str(group[0]), str(group[1]))])
        lv = self.fleet.level
        for part, sign in ((old, -1), (new, 1)):
            if part is not None:
                share = Share.of(part, self.bounds, lv)
                for tally in tallies:
                    tally.apply(share, sign)
