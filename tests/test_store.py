"""The pure decisions of the fetch step: item identity, new/changed/unchanged, dates, language,
source health and story linking. No database, no network."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from newsexchange.ingest.decide import (
    Decider,
    SourceState,
    StoredItem,
    after_failure,
    after_success,
    backoff_delay,
    content_hash,
    identities,
    is_due,
)
from newsexchange.ingest.model import ParsedEntry
from newsexchange.ingest.stories import SIMILAR_MAX_BITS, StoryIndex, StoryRef, fingerprint, similar

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def entry(**kw: object) -> ParsedEntry:
    base: dict[str, object] = {
        "guid": None,
        "link": None,
        "title": "Otsikko",
        "summary_html": "<p>Teksti</p>",
        "summary_text": "Teksti",
        "published_at": NOW - timedelta(hours=1),
    }
    base.update(kw)
    return ParsedEntry(**base)  # type: ignore[arg-type]


def decider(language: str = "fi", detected: str | None = "fi") -> Decider:
    return Decider(
        declared_language=language,
        now=NOW,
        detect=lambda _text: detected,
        fingerprint=fingerprint,
    )


def stored_from(values_id: int, e: ParsedEntry, identity: str) -> StoredItem:
    return StoredItem(values_id, identity, e.guid, e.link, content_hash(e), e.published_at or NOW)


def test_identity_prefers_guid_then_link_then_content_hash() -> None:
    es = [
        entry(guid="g1", link="http://x/1"),
        entry(link="http://x/2"),
        entry(title="no guid, no link"),
    ]
    keys = identities(es, [content_hash(e) for e in es])
    assert keys[0] == "g1"
    assert keys[1] == "http://x/2"
    assert keys[2].startswith("hash:")


def test_entries_sharing_one_link_are_not_merged_into_one_item() -> None:
    # An event listing whose items all point at the same page.
    es = [entry(link="http://x/afisha", title=f"Event {i}") for i in range(3)]
    d = decider().decide([], es)
    assert len(d.new) == 3
    assert len({v.identity for v in d.new}) == 3


def test_long_guids_are_hashed_to_fit_the_column() -> None:
    e = entry(guid="urn:" + "x" * 400)
    (key,) = identities([e], [content_hash(e)])
    assert len(key) <= 255 and key.startswith("sha256:")


def test_same_entries_again_are_unchanged() -> None:
    es = [entry(guid="a"), entry(guid="b", title="Toinen")]
    stored = [stored_from(i + 1, e, e.guid or "") for i, e in enumerate(es)]
    d = decider().decide(stored, es)
    assert (len(d.new), len(d.changed), d.unchanged) == (0, 0, 2)


def test_changed_content_is_an_update_of_the_same_row() -> None:
    old = entry(guid="a", title="Vanha otsikko")
    new = entry(guid="a", title="Korjattu otsikko")
    d = decider().decide([stored_from(7, old, "a")], [new])
    assert d.new == []
    ((item_id, values),) = d.changed
    assert item_id == 7 and values.title == "Korjattu otsikko" and values.identity == "a"


def test_a_bumped_date_alone_is_not_a_change() -> None:
    old = entry(guid="a")
    bumped = entry(guid="a", published_at=NOW)
    d = decider().decide([stored_from(1, old, "a")], [bumped])
    assert d.unchanged == 1 and not d.changed


def test_item_stored_by_link_is_recognised_when_the_feed_adds_guids() -> None:
    old = entry(link="http://x/1")
    d = decider().decide(
        [stored_from(3, old, "http://x/1")], [entry(guid="new-guid", link="http://x/1")]
    )
    assert d.new == [] and d.unchanged == 1


def test_repeated_entries_in_one_feed_are_stored_once() -> None:
    d = decider().decide([], [entry(guid="a"), entry(guid="a", title="dup")])
    assert len(d.new) == 1 and d.repeated == 1


def test_item_without_date_gets_first_seen_time_and_keeps_it_on_update() -> None:
    e = entry(guid="a", published_at=None)
    (values,) = decider().decide([], [e]).new
    assert values.published_at == NOW and values.date_from_feed is False
    first_seen = NOW - timedelta(days=2)
    stored = StoredItem(1, "a", "a", None, content_hash(e), first_seen)
    ((_id, changed),) = (
        decider()
        .decide(stored=[stored], entries=[entry(guid="a", published_at=None, title="uusi")])
        .changed
    )
    assert changed.published_at == first_seen


def test_future_dates_are_clamped_to_now() -> None:
    (values,) = decider().decide([], [entry(guid="a", published_at=NOW + timedelta(days=30))]).new
    assert values.published_at == NOW and values.date_from_feed is True


def test_language_mismatch_is_recorded_not_fatal() -> None:
    text = "Петрозаводск получит новые автобусы для городских маршрутов в следующем году"
    (values,) = decider("fi", detected="ru").decide([], [entry(guid="a", title=text)]).new
    assert values.language_mismatch is True and values.detected_language == "ru"
    (same,) = decider("fi", detected="fi").decide([], [entry(guid="b", title=text)]).new
    assert same.language_mismatch is False


def test_backoff_doubles_from_the_interval_up_to_the_cap() -> None:
    delays = [backoff_delay(n, interval_minutes=30, max_hours=24) for n in range(1, 9)]
    assert delays[:4] == [timedelta(minutes=m) for m in (30, 60, 120, 240)]
    assert delays[-1] == timedelta(hours=24)
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert backoff_delay(1, interval_minutes=30, max_hours=24, retry_after=7200) == timedelta(
        hours=2
    )
    assert backoff_delay(1, interval_minutes=30, max_hours=1, retry_after=10**9) == timedelta(
        hours=1
    )


def test_failure_counts_rests_and_success_resets() -> None:
    state = SourceState(id="s", url="http://x/feed")
    v = after_failure(
        state,
        now=NOW,
        error="HTTP 500",
        status=500,
        retry_after=None,
        interval_minutes=30,
        max_backoff_hours=24,
    )
    assert v["consecutive_failures"] == 1 and v["failing_since"] == NOW
    assert v["next_attempt_at"] == NOW + timedelta(minutes=30)
    resting = SourceState(
        id="s",
        url="http://x/feed",
        consecutive_failures=1,
        failing_since=NOW,
        next_attempt_at=v["next_attempt_at"],
    )
    assert not is_due(resting, NOW + timedelta(minutes=10))
    assert is_due(resting, NOW + timedelta(minutes=10), force=True)
    v2 = after_failure(
        resting,
        now=NOW + timedelta(hours=1),
        error="x",
        status=None,
        retry_after=None,
        interval_minutes=30,
        max_backoff_hours=24,
    )
    assert v2["consecutive_failures"] == 2 and v2["failing_since"] == NOW
    ok = after_success(
        resting,
        now=NOW,
        status=200,
        etag='"e"',
        last_modified=None,
        not_modified=False,
        permanent_url=None,
    )
    assert ok["consecutive_failures"] == 0 and ok["next_attempt_at"] is None
    assert ok["last_error"] is None and ok["etag"] == '"e"'


def test_permanent_redirect_moves_the_stored_url_and_304_keeps_validators() -> None:
    state = SourceState(id="s", url="http://x/old", etag='"1"')
    v = after_success(
        state,
        now=NOW,
        status=304,
        etag=None,
        last_modified=None,
        not_modified=True,
        permanent_url="http://x/new",
    )
    assert v["url"] == "http://x/new" and "etag" not in v


def test_story_index_links_the_same_story_from_another_source_only() -> None:
    a = fingerprint(
        "Petroskoin kaupunki ostaa kolmekymmentä uutta bussia",
        "Kaupunki kertoi, että uudet bussit tulevat liikenteeseen ensi vuonna.",
    )
    b = fingerprint(
        "Petroskoin kaupunki ostaa kolmekymmentä uutta bussia",
        "Kaupunki kertoi, että uudet bussit tulevat ensi vuonna liikenteeseen.",
    )
    other = fingerprint(
        "Joensuun yliopisto sai rahoitusta metsätutkimukseen",
        "Itä-Suomen yliopisto tutkii boreaalisia metsiä uudella hankkeella.",
    )
    assert similar(a, b) and not similar(a, other)
    for max_bits in (SIMILAR_MAX_BITS, None):  # numpy path and plain-Python path
        idx = StoryIndex(similar, max_bits)
        idx.add("joensuu", StoryRef(1, "src-a", int(a, 16), None))
        idx.add("joensuu", StoryRef(2, "src-c", int(other, 16), None))
        assert idx.match("joensuu", "src-a", b) is None  # same source: not a story link
        hit = idx.match("joensuu", "src-b", b)
        assert hit is not None and hit.item_id == 1
        assert idx.match("petrozavodsk", "src-b", b) is None  # other region


def test_story_index_rollback_forgets_what_a_failed_transaction_added() -> None:
    idx = StoryIndex(similar, SIMILAR_MAX_BITS)
    ref = StoryRef(1, "a", 0x0F0F0F0F0F0F0F0F, None)
    idx.add("r", ref)
    mark = idx.mark()
    idx.add("r", StoryRef(2, "b", 0x0F0F0F0F0F0F0F0E, None))
    idx.set_group(ref, 9)
    idx.rollback(mark)
    assert len(idx) == 1 and ref.group_id is None
