"""Digest periods: which days a digest covers, in the readers' time zone, and when it is due.

An exchange's ``schedule.days`` (default ``[1, 16]``) are the first days of its periods, in
the time zone of the digest's readers (:meth:`Config.exchange_tz`, the target region). With
the default, a month has two periods: 1st–15th and 16th–last day. A period is *named* by
its first day (``newsexchange digest build X --period 2026-11-01``).

A period's items are those published from its first local midnight up to (not including) the
next period's first local midnight; both bounds are kept here in UTC, because items are
stored in UTC. Its events are those starting in :func:`event_window`: from the digest's date
(the period's end) up to the end of the next period. The digest is *built* at ``schedule.time`` local time on the next period's
first day — the day after the period ends — so the last evening's news is in it.

Pure functions over plain dates and the config: no database, no clock (``now`` is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsexchange.config import Config, ExchangeSettings
from newsexchange.errors import DigestError


class PeriodError(DigestError):
    """A date that does not start a period: a usage mistake (the CLI exits 2)."""


@dataclass(frozen=True)
class Period:
    """One digest period.

    ``start``/``end`` are local calendar days (``end`` is the last day included), as stored
    in ``digests.period_start``/``period_end``; ``starts_at``/``ends_at`` are the UTC bounds
    of the items it covers (``ends_at`` excluded); ``build_at`` is when it may be built (UTC).
    """

    start: date
    end: date
    starts_at: datetime
    ends_at: datetime
    build_at: datetime
    timezone: str

    @property
    def end_inclusive(self) -> date:
        return self.end

    def contains(self, moment: datetime) -> bool:
        """Whether an aware instant falls within the period."""
        return self.starts_at <= moment < self.ends_at

    def to_json(self) -> dict[str, str]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "timezone": self.timezone,
        }


def _local_midnight_utc(day: date, tz: ZoneInfo) -> datetime:
    # Midnight exists on every day in the zones we serve (European DST switches at 03:00/04:00);
    # zoneinfo would resolve a skipped time with fold=0 anyway, so this never raises.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _first_day_on_or_before(day: date, days: list[int]) -> date:
    """The latest period start at or before ``day`` (a local date)."""
    starts = [d for d in days if d <= day.day]
    if starts:
        return day.replace(day=max(starts))
    # Before the first start day of this month: the last start day of the previous month.
    prev_month_last = day.replace(day=1) - timedelta(days=1)
    return prev_month_last.replace(day=max(days))


def _next_first_day(first: date, days: list[int]) -> date:
    later = [d for d in days if d > first.day]
    if later:
        return first.replace(day=min(later))
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return date(year, month, min(days))


def _make(first: date, exchange: ExchangeSettings, tz: ZoneInfo) -> Period:
    days = exchange.schedule.days
    nxt = _next_first_day(first, days)
    build_local = datetime.combine(nxt, exchange.schedule.at, tzinfo=tz)
    return Period(
        start=first,
        end=nxt - timedelta(days=1),
        starts_at=_local_midnight_utc(first, tz),
        ends_at=_local_midnight_utc(nxt, tz),
        build_at=build_local.astimezone(UTC),
        timezone=str(tz),
    )


def period_for(exchange: ExchangeSettings, config: Config, day: date) -> Period:
    """The period of ``exchange`` that contains the local date ``day``."""
    tz = config.exchange_tz(exchange)
    return _make(_first_day_on_or_before(day, exchange.schedule.days), exchange, tz)


def period_starting(exchange: ExchangeSettings, config: Config, day: date) -> Period:
    """The period that starts on ``day``; a clear :class:`DigestError` when none does."""
    period = period_for(exchange, config, day)
    if period.start != day:
        starts = ", ".join(str(d) for d in exchange.schedule.days)
        raise PeriodError(
            f"{day.isoformat()} does not start a period of exchange {exchange.id!r} (periods "
            f"start on day {starts} of each month; the period containing that day starts "
            f"{period.start.isoformat()})"
        )
    return period


def previous_period(exchange: ExchangeSettings, config: Config, period: Period) -> Period:
    return period_for(exchange, config, period.start - timedelta(days=1))


def next_period(exchange: ExchangeSettings, config: Config, period: Period) -> Period:
    """The period that follows ``period`` (it starts on the day after ``period.end``)."""
    return period_for(exchange, config, period.end + timedelta(days=1))


def event_window(
    exchange: ExchangeSettings, config: Config, period: Period
) -> tuple[datetime, datetime]:
    """The starts ``[from, until)`` of the events a period's digest lists (UTC).

    The digest goes out when its period ends (``period.ends_at``, the first instant of the
    next period), and its readers plan ahead: it lists the events starting from then up to
    the end of the next period, when the next digest takes over — so every event is listed
    by exactly one digest, the last one before it starts, whenever it was announced.
    """
    return period.ends_at, next_period(exchange, config, period).ends_at


def current_period(exchange: ExchangeSettings, config: Config, now: datetime) -> Period:
    """The period in progress at ``now`` (an aware instant), in the readers' time zone."""
    tz = config.exchange_tz(exchange)
    return period_for(exchange, config, now.astimezone(tz).date())


def due_periods(exchange: ExchangeSettings, config: Config, now: datetime) -> list[Period]:
    """The most recent *completed* period whose build time has passed, as a one-item list.

    A period completes at the next period's first local midnight but is due only at
    ``schedule.time`` that day; between midnight and then, the period before it is still the
    latest due one. A list so a caller can loop (and so a catch-up policy can be added later
    without changing callers); building is idempotent, so returning an already built
    period is harmless.
    """
    if now.tzinfo is None:
        raise DigestError("due_periods needs an aware datetime for now (UTC)")
    last = previous_period(exchange, config, current_period(exchange, config, now))
    if last.build_at > now:
        last = previous_period(exchange, config, last)
    return [last]


def skip_reason(state: str | None, item_count: int, *, in_progress: bool) -> str | None:
    """Why the service leaves a period alone, or None when it builds it.

    A period is built by the service once: when its digest exists already (``state``, in
    any state) it is left to the editors (``newsexchange digest build`` rebuilds by hand). A
    due period is built even when it has no item: the approval step then tells the editors
    once that it has nothing to send and why, instead of asking them to approve it
    (:mod:`newsexchange.digest.sendable`). The period in progress (``in_progress``, the
    demo) is built only when it has items.
    """
    if state is not None:
        return f"already built ({state})"
    if not item_count and in_progress:
        return "no items in the period"
    return None


def worth_building(state: str | None, item_count: int, *, in_progress: bool) -> bool:
    """Whether the service builds the period (:func:`skip_reason` gives none)."""
    return skip_reason(state, item_count, in_progress=in_progress) is None
