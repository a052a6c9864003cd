"""The ranking: pure decisions over plain data, with the reasons an editor reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from newsexchange.digest.select import Candidate, Policy, Steering, select

START = datetime(2026, 10, 31, 21, 0, tzinfo=UTC)
END = datetime(2026, 11, 15, 21, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 16, 6, 0, tzinfo=UTC)


def cand(item_id: int, source: str = "a", *, day: int = 5, **kw: object) -> Candidate:
    defaults: dict[str, object] = {
        "title": f"item {item_id}",
        "category": "news",
        "published_at": datetime(2026, 11, day, 12, 0, tzinfo=UTC),
        "translated": True,
    }
    defaults.update(kw)
    return Candidate(item_id=item_id, source_id=source, **defaults)  # type: ignore[arg-type]


def run(cands: list[Candidate], policy: Policy | None = None, steering: Steering | None = None):  # type: ignore[no-untyped-def]
    return select(
        cands,
        policy=policy or Policy(max_items=20, max_per_source=5),
        period_start=START,
        period_end=END,
        now=NOW,
        steering=steering,
    )


def test_heavier_source_outranks_a_newer_item_and_the_reason_shows_why() -> None:
    sel = run([cand(1, "light", day=14), cand(2, "heavy", day=2, weight=1.5)])
    assert [c.item_id for c in sel.included] == [2, 1]
    heavy = sel.included[0].reason
    assert heavy["weight"] == 1.5 and heavy["sources"] == 1 and heavy["coverage"] == 1.0
    assert heavy["score"] == pytest.approx(
        heavy["weight"] * heavy["coverage"] * heavy["recency"], abs=0.002
    )


def test_recency_breaks_ties_between_equal_sources() -> None:
    sel = run([cand(1, day=2), cand(2, day=14)])
    assert [c.item_id for c in sel.included] == [2, 1]
    assert sel.included[0].reason["recency"] > sel.included[1].reason["recency"] >= 0.8


def test_story_carried_by_three_sources_ranks_up_and_lists_the_others_as_duplicates() -> None:
    cands = [
        cand(1, "a", day=3, story_group=7),
        cand(2, "b", day=4, story_group=7, weight=1.2),
        cand(3, "c", day=5, story_group=7),
        cand(4, "d", day=14, weight=1.5),
    ]
    sel = run(cands)
    assert [c.item_id for c in sel.included] == [2, 4]  # 1.2 × 2.0 coverage beats 1.5
    rep = sel.included[0]
    assert rep.reason["sources"] == 3 and rep.reason["coverage"] == 2.0
    assert sorted(rep.reason["duplicates"]) == [1, 3]
    dups = {c.item_id: c for c in sel.left_out}
    assert {dups[1].left_out, dups[3].left_out} == {"duplicate_story"}
    assert dups[1].reason["duplicate_of"] == 2


def test_caps_per_source_and_overall_leave_items_out_with_their_reason() -> None:
    cands = [cand(i, "big", day=1 + i, weight=2) for i in range(1, 5)]
    cands += [cand(10, "small"), cand(11, "other")]
    sel = run(cands, Policy(max_items=3, max_per_source=2))
    assert len(sel.included) == 3
    assert sum(1 for c in sel.included if c.candidate.source_id == "big") == 2
    reasons = {c.item_id: c.left_out for c in sel.left_out}
    assert reasons == {2: "over_source_cap", 1: "over_source_cap", 11: "over_cap"}


def test_pinned_item_goes_in_first_despite_low_score_and_counts_against_caps() -> None:
    cands = [cand(1, "a", weight=0.1), cand(2, "b", weight=2, day=9), cand(3, "c", weight=2)]
    sel = run(cands, Policy(max_items=2, max_per_source=1), Steering(pins={1}))
    assert sel.included[0].item_id == 1 and sel.included[0].reason["pinned"] is True
    assert [c.item_id for c in sel.included] == [1, 2]
    assert [(c.item_id, c.left_out) for c in sel.left_out] == [(3, "over_cap")]


def test_pins_go_in_even_beyond_the_caps() -> None:
    cands = [cand(1, "a"), cand(2, "a"), cand(3, "a")]
    sel = run(cands, Policy(max_items=1, max_per_source=1), Steering(pins={1, 2, 3}))
    assert len(sel.included) == 3


def test_dropped_item_stays_out_even_with_the_best_score() -> None:
    sel = run([cand(1, weight=5), cand(2)], steering=Steering(drops={1}))
    assert [c.item_id for c in sel.included] == [2]
    assert sel.left_out[0].item_id == 1 and sel.left_out[0].left_out == "dropped"


def test_untranslated_item_is_left_out_unless_the_exchange_carries_originals() -> None:
    cands = [cand(1, weight=3, translated=False), cand(2)]
    sel = run(cands)
    assert [c.item_id for c in sel.included] == [2]
    assert sel.left_out[0].left_out == "untranslated"
    carried = run(cands, Policy(include_untranslated=True))
    assert [c.item_id for c in carried.included] == [1, 2]
    assert carried.included[0].reason["untranslated"] is True


def test_untranslated_duplicate_gives_way_to_a_translated_member_of_the_story() -> None:
    cands = [cand(1, "a", weight=3, story_group=1, translated=False), cand(2, "b", story_group=1)]
    sel = run(cands)
    assert [c.item_id for c in sel.included] == [2]
    assert sel.included[0].reason["sources"] == 2


def test_events_come_after_news_by_start_then_undated_and_a_past_one_is_left_out() -> None:
    ev = "events"
    cands = [
        cand(1, category=ev, event_start=END + timedelta(days=9), weight=3),
        cand(2, category=ev, event_start=END + timedelta(days=2)),
        cand(3, category=ev, event_start=None, weight=2),
        cand(4, category=ev, event_start=END - timedelta(days=3), weight=4),
        cand(5, "b"),
    ]
    sel = run(cands)
    assert [(c.position, c.item_id, c.section) for c in sel.included] == [
        (1, 5, "news"),
        (2, 2, "events"),
        (3, 1, "events"),
        (4, 3, "events"),
    ]
    assert [(c.item_id, c.left_out) for c in sel.left_out] == [(4, "event_before_digest")]
    assert sel.section_counts() == {"news": 1, "events": 3}


def test_a_calendar_fills_the_events_with_its_cap_and_its_news_still_get_in() -> None:
    """max_per_source counts a source's news and events apart, and an event announced at the
    period's start is not ranked below fresh news by its publication date."""
    ev = "events"
    cands = [
        cand(i, "city", day=1, category=ev, event_start=END + timedelta(days=1 + i))
        for i in range(1, 8)
    ] + [cand(10 + i, "city", day=14) for i in range(1, 8)]
    sel = run(cands, Policy(max_items=12, max_per_source=5))
    assert sel.section_counts() == {"news": 5, "events": 5}
    assert [c.item_id for c in sel.included if c.section == "events"] == [1, 2, 3, 4, 5]
    assert all(c.reason["recency"] == 1.0 for c in sel.included if c.section == "events")
    assert sorted(c.left_out or "" for c in sel.left_out) == ["over_source_cap"] * 4


def test_the_digest_date_not_the_clock_decides_what_is_upcoming() -> None:
    """An event between the digest's date and the build (the build runs at 09:00 on the
    16th; the event was at 07:00) is still the digest's; a year later, the same verdict."""
    early = cand(1, category="events", event_start=END + timedelta(hours=1))
    for now in (NOW, NOW + timedelta(days=365)):
        sel = select(
            [early],
            policy=Policy(),
            period_start=START,
            period_end=END,
            now=now,
        )
        assert [c.item_id for c in sel.included] == [1]


def test_a_news_item_with_a_start_is_an_event() -> None:
    sel = run([cand(1, event_start=END + timedelta(days=4)), cand(2)])
    assert {c.item_id: c.section for c in sel.included} == {1: "events", 2: "news"}


def test_a_pinned_past_event_stays_in_after_the_upcoming_ones() -> None:
    ev = "events"
    cands = [
        cand(1, category=ev, event_start=END - timedelta(days=1)),
        cand(2, category=ev, event_start=END + timedelta(days=5)),
        cand(3, category=ev),
    ]
    sel = run(cands, steering=Steering(pins={1}))
    assert [c.item_id for c in sel.included] == [2, 3, 1]
    assert sel.included[-1].reason["before_digest"] is True
    assert sel.left_out == []


def test_editor_order_puts_ranked_items_first_within_their_section() -> None:
    cands = [cand(1, weight=3), cand(2, weight=2), cand(3, weight=1)]
    sel = run(cands, steering=Steering(ranks={3: 1, 2: 2}))
    assert [c.item_id for c in sel.included] == [3, 2, 1]
    assert sel.included[0].reason["editor_rank"] == 1


def test_ranking_is_deterministic_for_equal_scores() -> None:
    cands = [cand(i, f"s{i}", day=5) for i in (5, 3, 9, 1)]
    first = [c.item_id for c in run(cands).included]
    again = [c.item_id for c in run(list(reversed(cands))).included]
    assert first == again == [1, 3, 5, 9]
