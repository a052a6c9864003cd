"""Feed dates → aware UTC datetimes, as feedparser reads them (:func:`parse_date`): a fast
reading of the common RFC 822 / ISO 8601 forms, feedparser's handler chain for the rest, a
lenient reading of zone-less dates last."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz
from typing import Any

from feedparser.datetimes import _parse_date

# --- dates --------------------------------------------------------------------------------

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_RFC822 = re.compile(
    r"^(?:[A-Za-z]{3},?\s+)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s+(?:([+-])(\d{2}):?(\d{2})|(GMT|UT|UTC|Z))$"
)
_ISO_FULL = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$", re.I
)


def fast_date(value: str) -> datetime | None:
    """The two forms nearly every feed uses, parsed without feedparser's handler chain.

    Only forms where feedparser's answer is certain: a full RFC 822 date with a numeric or
    GMT zone, and a full ISO 8601 / W3CDTF timestamp with a zone.
    """
    m = _RFC822.match(value)
    if m:
        day, mon, year, hh, mi, ss, sign, oh, om, _z = m.groups()
        month = _MONTHS.get(mon.lower())
        if month is None:
            return None
        try:
            dt = datetime(int(year), month, int(day), int(hh), int(mi), int(ss or 0), tzinfo=UTC)
        except ValueError:
            return None
        if sign:
            offset = timedelta(hours=int(oh), minutes=int(om))
            dt = dt - offset if sign == "+" else dt + offset
        return dt
    if _ISO_FULL.match(value):
        try:
            dt = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            return None
        # feedparser's struct_time has whole seconds; the two paths must agree.
        return dt.astimezone(UTC).replace(microsecond=0)
    return None


def struct_to_dt(st: Any) -> datetime | None:
    try:
        return datetime(st[0], st[1], st[2], st[3], st[4], st[5], tzinfo=UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def lenient_date(value: str) -> datetime | None:
    """Dates feedparser gives up on but a reader would not: RFC 822 without a zone,
    ISO without a zone. Read as UTC (what feedparser assumes for date-only values)."""
    try:
        t = parsedate_tz(value)
        if t is not None:
            dt = datetime(t[0], t[1], t[2], t[3], t[4], t[5], tzinfo=UTC)
            return dt - timedelta(seconds=t[9] or 0)
        dt = datetime.fromisoformat(value.strip())
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError, TypeError):  # year 0, +14:00 on 0001-01-01 …
        return None


def parse_date(value: str | None) -> datetime | None:
    """A feed date string → aware UTC datetime, exactly as feedparser reads it (its handler
    chain), falling back to a lenient reading of zone-less dates; None when unreadable."""
    if not value:
        return None
    value = value.strip()
    dt = fast_date(value)
    if dt is not None:
        return dt
    st = _parse_date(value)
    if st is not None:
        return struct_to_dt(st)
    return lenient_date(value)
