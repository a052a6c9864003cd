"""The shared mechanisms: one back-off (with the four steps' settings characterised), one
Retry-After parser, one pacer, one "is that process dead?", the injected clock, the digest's
state machine."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from newsexchange.clock import SYSTEM_CLOCK, FrozenClock
from newsexchange.common.leases import owner_id, owner_is_dead
from newsexchange.common.pacing import Pacer, SharedPacer
from newsexchange.common.retry import Backoff, parse_retry_after
from newsexchange.digest.states import (
    OPEN,
    PUBLIC,
    SENDABLE,
    STATES,
    DigestState,
    move,
    transition,
)
from newsexchange.errors import DigestError

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# -- back-off: the same formula, each step's scale -------------------------------------------


def test_source_backoff_doubles_from_the_fetch_interval_up_to_the_cap() -> None:
    b = Backoff(base=30 * 60, cap=24 * 3600)  # a source fetched every 30 min, rests ≤ 24 h
    assert [b.delay(n) / 60 for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1440, 1440]
    assert b.delay(1, retry_after=7200) == 7200  # the server asked for longer
    assert Backoff(base=1800, cap=3600).delay(1, retry_after=10**9) == 3600  # never past the cap


def test_translation_backoff_is_five_minutes_doubled() -> None:
    b = Backoff(base=300, cap=3600)
    assert [b.delay(n) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]


def test_delivery_backoff_honours_a_relays_wait_in_full() -> None:
    b = Backoff(base=120, cap=6 * 3600, cap_retry_after=False)
    assert [b.delay(n) for n in (1, 2, 3)] == [120, 240, 480]
    assert b.delay(20) == 6 * 3600
    assert b.delay(1, retry_after=10 * 3600) == 10 * 3600  # above the cap: honoured


def test_jitter_stays_within_its_band_and_under_the_cap() -> None:
    lo = Backoff(base=0.5, cap=30, jitter=0.25, random=lambda: 0.0)
    hi = Backoff(base=0.5, cap=30, jitter=0.25, random=lambda: 1.0)
    assert lo.delay(1) == pytest.approx(0.375) and hi.delay(1) == pytest.approx(0.625)
    assert hi.delay(10) == 30
    assert Backoff(base=1, cap=10).delay(10**6) == 10  # huge attempt counts do not overflow


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 7 ") == 7
    assert parse_retry_after("Mon, 02 Mar 2026 09:02:00 GMT", now=NOW) == 120
    assert parse_retry_after("Mon, 02 Mar 2026 09:02:00 -0000", now=NOW) == 120  # zone-less
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None and parse_retry_after(None) is None
    assert parse_retry_after("999999", cap=3600) == 3600


# -- pacing ------------------------------------------------------------------------------------


def test_pacer_spaces_units_without_saving_up_idle_time() -> None:
    clock = FrozenClock(NOW)
    pacer = Pacer(10, clock=clock.monotonic, sleep=clock.sleep)
    slept = [pacer.wait(1) for _ in range(5)]
    assert slept[0] == 0 and slept[1:] == pytest.approx([0.1] * 4)
    clock.advance(60)  # a long pause is not a licence for a burst
    assert pacer.wait(5) == 0
    assert pacer.wait(1) == pytest.approx(0.5)  # the five booked before it
    with pytest.raises(ValueError):
        Pacer(0)


def test_shared_pacer_books_blocks_of_at_most_a_second_and_sleeps_what_the_slot_says() -> None:
    """Two pacers booking one slot (here an in-memory GCRA on a frozen clock, as the
    database row does it) follow each other: together they keep the one rate."""
    clock = FrozenClock(NOW)
    next_free = [clock.monotonic()]
    booked: list[float] = []

    def reserve(seconds: float) -> float:
        now = clock.monotonic()
        start = max(next_free[0], now)
        next_free[0] = start + seconds
        booked.append(seconds)
        return start - now

    a = SharedPacer(10, reserve, sleep=clock.sleep)
    b = SharedPacer(10, reserve, sleep=clock.sleep)
    assert a.wait(10) == 0  # a second's worth: one booking
    assert b.wait(10) == pytest.approx(1.0)  # after a's second, not beside it
    # 2.5 s booked as 1 + 1 + 0.5, each piece slept for: the 25 go when the last piece starts
    assert a.wait(25) == pytest.approx(3.0)
    assert booked == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5])
    with pytest.raises(ValueError):
        SharedPacer(0, reserve)


# -- process identity --------------------------------------------------------------------------


def test_a_process_that_has_exited_is_dead_others_are_not() -> None:
    me = owner_id()
    assert not owner_is_dead(me)  # this process
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from newsexchange.common.leases import owner_id; print(owner_id())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert owner_is_dead(proc.stdout.strip())  # it has exited
    host = me.split(":", 1)[0]
    assert not owner_is_dead(f"another-{host}:1:abc")  # another host: cannot tell
    assert not owner_is_dead("garbage") and not owner_is_dead(None)


# -- the clock ---------------------------------------------------------------------------------


def test_frozen_clock_moves_only_when_told() -> None:
    clock = FrozenClock(NOW)
    assert clock.now() == NOW == clock()
    clock.sleep(90)
    assert clock.now() == NOW + timedelta(seconds=90) and clock.monotonic() == 90
    with pytest.raises(ValueError):
        FrozenClock(datetime(2026, 1, 1))  # naive
    assert SYSTEM_CLOCK.now().tzinfo is not None


# -- the digest's states -----------------------------------------------------------------------


def test_the_state_sets_partition_the_states() -> None:
    assert set(STATES) == {s.value for s in DigestState}
    assert OPEN.isdisjoint(PUBLIC) and set(SENDABLE) <= set(PUBLIC)
    assert set(STATES) - OPEN - set(PUBLIC) == {"rejected"}


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        ("draft", "request", "awaiting_approval"),
        ("held", "request", "awaiting_approval"),
        ("revising", "request", "awaiting_approval"),
        ("awaiting_approval", "approve", "approved"),
        ("draft", "approve", "approved"),
        ("awaiting_approval", "reject", "revising"),
        ("awaiting_approval", "revise", "revising"),
        ("awaiting_approval", "rebuild", "draft"),
        ("awaiting_approval", "deadline_hold", "held"),
        ("awaiting_approval", "deadline_reject", "rejected"),
        ("revising", "deadline_hold", "held"),
        ("approved", "start_send", "sending"),
        ("sending", "finish_send", "sent"),
        ("approved", "finish_send", "sent"),
    ],
)
def test_transitions(state: str, event: str, after: str) -> None:
    assert transition(state, event) == after  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("sent", "approve"),
        ("approved", "revise"),
        ("rejected", "request"),
        ("sending", "rebuild"),
        ("draft", "finish_send"),
        ("nonsense", "approve"),
    ],
)
def test_a_transition_the_table_lacks_is_refused(state: str, event: str) -> None:
    class Row:
        def __init__(self, s: str) -> None:
            self.state = s

    row = Row(state)
    with pytest.raises(DigestError, match="cannot take"):
        move(row, event)  # type: ignore[arg-type]
    assert row.state == state  # unchanged


def test_move_sets_the_rows_state() -> None:
    class Row:
        state = "draft"

    row = Row()
    assert move(row, "request") is DigestState.AWAITING_APPROVAL
    assert row.state == "awaiting_approval" and type(row.state) is str
