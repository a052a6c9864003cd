"""Digest periods: the readers' calendar (schedule.days in the target region's zone), in UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from newsexchange.config import Config
from newsexchange.digest.periods import (
    PeriodError,
    due_periods,
    period_for,
    period_starting,
)

EXCHANGES = """\
exchanges:
  - {id: to-ptz, from: [joensuu], to: petrozavodsk, language: ru, editors: [e@example.fi]}
  - {id: to-joe, from: [petrozavodsk], to: joensuu, language: fi, editors: [e@example.fi]}
  - id: weekly-ish
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [e@example.fi]
    schedule: {days: [28, 7], time: "07:30"}
"""


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return write_config(EXCHANGES)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def test_default_days_split_a_month_into_1st_to_15th_and_16th_to_last(cfg: Config) -> None:
    ex = cfg.exchange("to-ptz")
    first = period_for(ex, cfg, date(2026, 11, 9))
    assert (first.start, first.end) == (date(2026, 11, 1), date(2026, 11, 15))
    second = period_for(ex, cfg, date(2026, 11, 16))
    assert (second.start, second.end) == (date(2026, 11, 16), date(2026, 11, 30))
    assert period_for(ex, cfg, date(2026, 11, 30)) == second


def test_second_half_of_december_ends_on_new_years_eve_and_january_follows(cfg: Config) -> None:
    ex = cfg.exchange("to-ptz")
    dec = period_for(ex, cfg, date(2026, 12, 31))
    assert (dec.start, dec.end) == (date(2026, 12, 16), date(2026, 12, 31))
    # Moscow is UTC+3 all year: the period ends at 21:00 UTC on the 31st.
    assert dec.ends_at == utc(2026, 12, 31, 21, 0)
    jan = period_for(ex, cfg, date(2027, 1, 1))
    assert jan.start == date(2027, 1, 1) and jan.starts_at == dec.ends_at


@pytest.mark.parametrize(
    ("year", "last_day"), [(2026, 28), (2028, 29)], ids=["common-year", "leap-year"]
)
def test_february_second_half_ends_on_its_last_day(cfg: Config, year: int, last_day: int) -> None:
    p = period_for(cfg.exchange("to-joe"), cfg, date(year, 2, 20))
    assert (p.start, p.end) == (date(year, 2, 16), date(year, 2, last_day))
    assert p.ends_at == utc(year, 2, last_day, 22, 0)  # midnight of 1 March in Helsinki (UTC+2)


def test_moscow_and_helsinki_periods_start_an_hour_apart_in_winter(cfg: Config) -> None:
    moscow = period_for(cfg.exchange("to-ptz"), cfg, date(2026, 11, 1))
    helsinki = period_for(cfg.exchange("to-joe"), cfg, date(2026, 11, 1))
    assert moscow.timezone == "Europe/Moscow" and helsinki.timezone == "Europe/Helsinki"
    assert moscow.starts_at == utc(2026, 10, 31, 21, 0)
    assert helsinki.starts_at == utc(2026, 10, 31, 22, 0)


def test_moscow_and_helsinki_agree_in_summer_when_helsinki_is_on_dst(cfg: Config) -> None:
    moscow = period_for(cfg.exchange("to-ptz"), cfg, date(2026, 7, 1))
    helsinki = period_for(cfg.exchange("to-joe"), cfg, date(2026, 7, 1))
    assert moscow.starts_at == helsinki.starts_at == utc(2026, 6, 30, 21, 0)


def test_period_spanning_the_march_dst_change_is_an_hour_short_in_helsinki(cfg: Config) -> None:
    # Finland moves clocks forward on 29 March 2026: the period 16–31 March loses an hour.
    p = period_for(cfg.exchange("to-joe"), cfg, date(2026, 3, 29))
    assert p.starts_at == utc(2026, 3, 15, 22, 0)  # UTC+2
    assert p.ends_at == utc(2026, 3, 31, 21, 0)  # UTC+3
    assert p.ends_at - p.starts_at == timedelta(days=16) - timedelta(hours=1)


def test_period_spanning_the_october_dst_change_is_an_hour_long_in_helsinki(cfg: Config) -> None:
    p = period_for(cfg.exchange("to-joe"), cfg, date(2026, 10, 25))
    assert p.ends_at - p.starts_at == timedelta(days=16, hours=1)


def test_unsorted_custom_days_wrap_around_the_month(cfg: Config) -> None:
    ex = cfg.exchange("weekly-ish")  # days [28, 7] (sorted by config to [7, 28])
    p = period_for(ex, cfg, date(2027, 3, 3))
    assert (p.start, p.end) == (date(2027, 2, 28), date(2027, 3, 6))
    p2 = period_for(ex, cfg, date(2027, 3, 7))
    assert (p2.start, p2.end) == (date(2027, 3, 7), date(2027, 3, 27))


def test_a_day_that_starts_no_period_is_refused_with_the_period_that_contains_it(
    cfg: Config,
) -> None:
    ex = cfg.exchange("to-ptz")
    assert period_starting(ex, cfg, date(2026, 11, 16)).start == date(2026, 11, 16)
    with pytest.raises(PeriodError, match=r"2026-11-05 does not start.*starts 2026-11-01"):
        period_starting(ex, cfg, date(2026, 11, 5))


def test_due_period_waits_for_the_build_time_on_the_next_periods_first_day(cfg: Config) -> None:
    ex = cfg.exchange("to-ptz")  # 09:00 Moscow = 06:00 UTC
    before = due_periods(ex, cfg, utc(2026, 11, 16, 5, 59))
    after = due_periods(ex, cfg, utc(2026, 11, 16, 6, 0))
    assert [p.start for p in before] == [date(2026, 10, 16)]
    assert [p.start for p in after] == [date(2026, 11, 1)]
    assert after[0].build_at == utc(2026, 11, 16, 6, 0)


def test_due_period_on_new_years_day_is_the_second_half_of_december(cfg: Config) -> None:
    ex = cfg.exchange("to-joe")  # 09:00 Helsinki = 07:00 UTC in winter
    (p,) = due_periods(ex, cfg, utc(2027, 1, 1, 7, 0))
    assert (p.start, p.end) == (date(2026, 12, 16), date(2026, 12, 31))


def test_same_instant_is_due_in_moscow_but_not_yet_in_helsinki(cfg: Config) -> None:
    moment = utc(2026, 11, 16, 6, 30)  # 09:30 in Moscow, 08:30 in Helsinki
    assert due_periods(cfg.exchange("to-ptz"), cfg, moment)[0].start == date(2026, 11, 1)
    assert due_periods(cfg.exchange("to-joe"), cfg, moment)[0].start == date(2026, 10, 16)


def test_due_periods_refuses_a_naive_now(cfg: Config) -> None:
    from newsexchange.errors import DigestError

    with pytest.raises(DigestError, match="aware"):
        due_periods(cfg.exchange("to-ptz"), cfg, datetime(2026, 11, 16, 6, 30))
