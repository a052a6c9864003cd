"""Render a digest into what is mailed: subject, preheader, HTML (CSS inlined) and plain text.

Rendering happens once per digest and language; delivery personalizes each copy by plain
string substitution of these literal markers (present in both the HTML and the text):

``%%UNSUBSCRIBE_URL%%``
    The recipient's one-click unsubscribe link, in the footer. In the HTML it sits inside an
    ``href="…"`` attribute, so delivery must substitute an HTML-escaped URL there
    (``html.escape(url, quote=True)``) and the raw URL in the text part.

Story links (the title and "read the original", HTML and text) are the signed click
redirect ``{public_url}/r/…`` (:mod:`newsexchange.digest.links`) when the exchange counts
clicks (``impact.clicks``, the default) and the digest has an id; they are the same in every
copy, so a click says which story, never who. ``clicks=False`` renders the direct source
links: the editors' previews (their clicks are not readers' clicks) and the public archive
page (crawlers follow every link of a public page; the counts are the mailed digest's).
Only the href changes, never the link's text: the mail looks the same either way.

Everything else is the same for every recipient: the "view in browser" link points at
``view_url`` (default ``{public_url}/digests/{id}``), and no recipient address appears.
List headers (List-Unsubscribe, List-Unsubscribe-Post, List-Id, Precedence …) are added at
delivery through ``to_email(..., extra_headers=...)``.

What is shown comes from :mod:`newsexchange.digest.content` (``digest_content``, a plain
dict of ``schema`` :data:`CONTENT_SCHEMA`; re-exported here). When the approval step freezes a
digest it stores exactly that dict in ``digest.frozen``; :func:`render_digest` then renders
the frozen content, so what was approved is what is sent even if a translation changes later.
Rendering itself reads no database: :func:`render_content` takes the content as data.

Escaping: the Jinja environment autoescapes; the only HTML marked safe is an item's summary
HTML, which ingestion sanitized on the way in and which is cleaned once more here with nh3
(a small allow-list) in case a translation provider returned markup.
"""

from __future__ import annotations

import binascii
import logging
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline
import nh3
from babel import Locale
from babel.dates import format_date, get_timezone_location
from babel.dates import format_datetime as babel_datetime
from babel.numbers import format_decimal
from markupsafe import Markup

from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Digest, Session
from newsexchange.digest.content import (
    CONTENT_SCHEMA,
    content_hash,
    digest_content,
    shown_content,
)
from newsexchange.digest.ics import digest_calendar_url
from newsexchange.digest.links import click_url, is_followable
from newsexchange.errors import ConfigError, DigestError
from newsexchange.i18n import LANGUAGES, gettext_for, ngettext_for
from newsexchange.mail.headers import POLICY, header_text
from newsexchange.templating import environment
from newsexchange.translate.glossary import Term, load_glossary

__all__ = [
    "CONTENT_SCHEMA",
    "UNSUBSCRIBE_MARKER",
    "EventWhen",
    "RenderedDigest",
    "clean_summary",
    "content_hash",
    "digest_content",
    "event_when",
    "exchange_title",
    "format_day",
    "format_event",
    "format_period",
    "format_place",
    "labels",
    "language_name",
    "plural",
    "render_content",
    "render_digest",
    "subject_for",
    "time_in",
    "to_email",
    "town_name",
    "untranslated_note",
]

UNSUBSCRIBE_MARKER = "%%UNSUBSCRIBE_URL%%"

log = logging.getLogger(__name__)

# -- labels ----------------------------------------------------------------------------------
# The gettext catalogues (newsexchange/i18n.py), like every other text; the digest's own few
# labels are gathered in one dict so the templates read ``t.news``. Plural forms follow each
# catalogue's CLDR rule (Russian 1/2/5).


def labels(language: str) -> dict[str, str]:
    _ = gettext_for(_lang(language))
    return {
        "digest": _("News digest"),
        "news": _("News"),
        "events": _("Events"),
        "read_original": _("Read the original"),
        "original_title": _("Original title"),
        "source": _("Source"),
        "when": _("When"),
        "add_to_calendar": _("Add to calendar (.ics)"),
        "also_in": _("Also in"),
        "view_online": _("View in browser"),
        "unsubscribe": _("Unsubscribe"),
        "machine": _(
            "Titles and summaries are machine-translated; the original titles are included."
        ),
        "empty": _("No news in this period."),
        "footer": _(
            "You receive this digest because you are on a media list of the regional news exchange."
        ),
        "and": _("and"),
    }


def untranslated_note(language: str, original: str) -> str:
    _ = gettext_for(language)
    return _("Not translated – original language: %(language)s", language=original)


def time_in(language: str, city: str) -> str:
    _ = gettext_for(language)
    return _("%(city)s time", city=city)


def plural(language: str, key: str, n: int) -> str:
    ngettext = ngettext_for(_lang(language))
    num = format_decimal(n, locale=language)
    if key == "events":
        return ngettext("%(num)s event", "%(num)s events", n, num=num)
    return ngettext("%(num)s news item", "%(num)s news items", n, num=num)


# Date patterns (CLDR syntax). babel's interval formats give "1–15 нояб. 2026 г." and
# "Nov 1 – 15, 2026"; the exchange's editors asked for the long forms below, so periods are
# composed here from day/month patterns whose output is checked in the tests.
DAY = {"fi": "d.", "ru": "d", "en": "d"}
DAY_MONTH = {"fi": "d. MMMM", "ru": "d MMMM", "en": "d MMMM"}
DAY_MONTH_YEAR = {"fi": "d. MMMM y", "ru": "d MMMM y", "en": "d MMMM y"}
# Finnish takes the stand-alone weekday ("lauantai", cccc): EEEE gives the essive
# "lauantaina", which reads wrong at the head of a line.
EVENT_DATE = {"fi": "cccc d. MMMM", "ru": "EEEE, d MMMM", "en": "EEEE d MMMM"}
EVENT_TIME = {
    "fi": "cccc d. MMMM 'klo' H.mm",
    "ru": "EEEE, d MMMM, HH:mm",
    "en": "EEEE d MMMM, HH:mm",
}
TIME = {"fi": "H.mm", "ru": "HH:mm", "en": "HH:mm"}
NOTE_TIME = {"fi": "'klo' H.mm", "ru": "HH:mm", "en": "HH:mm"}
NOTE_DAY_TIME = {"fi": "d. MMMM 'klo' H.mm", "ru": "d MMMM, HH:mm", "en": "d MMMM, HH:mm"}

SUMMARY_TAGS = {
    "p",
    "br",
    "a",
    "b",
    "strong",
    "i",
    "em",
    "ul",
    "ol",
    "li",
    "blockquote",
    "q",
    "sub",
    "sup",
}


def _lang(language: str) -> str:
    if language not in LANGUAGES:
        raise DigestError(f"no labels for language {language!r} (expected one of fi, ru, en)")
    return language


def format_period(start: date, end: date, language: str) -> str:
    """ "1.–15. marraskuuta 2026", "1–15 ноября 2026", "1–15 November 2026" (end included)."""
    lang = _lang(language)
    en_dash = "–"
    if start == end:
        return format_date(start, DAY_MONTH_YEAR[lang], locale=lang)
    last = format_date(end, DAY_MONTH_YEAR[lang], locale=lang)
    if (start.year, start.month) == (end.year, end.month):
        first = format_date(start, DAY[lang], locale=lang)
        return f"{first}{en_dash}{last}"
    if start.year == end.year:
        first = format_date(start, DAY_MONTH[lang], locale=lang)
    else:
        first = format_date(start, DAY_MONTH_YEAR[lang], locale=lang)
    return f"{first} {en_dash} {last}"


def format_day(moment: datetime, language: str, tz: ZoneInfo) -> str:
    return format_date(moment.astimezone(tz).date(), DAY_MONTH[_lang(language)], locale=language)


def _event_zone(name: str | None, fallback: ZoneInfo) -> ZoneInfo:
    """The zone an event's source gave, else ``fallback`` (its region's): a name zoneinfo
    does not know (a feed's typo) must not stop a digest from rendering."""
    if name:
        try:
            return ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            log.warning("unknown event time zone", extra={"timezone": name})
    return fallback


def _zone_note(language: str, zone: ZoneInfo, time_text: str) -> str:
    """ "18:00 по Хельсинки", "klo 19.00 Moskovan aikaa", "18:00 Helsinki time": the two
    clocks of the exchange by the names their readers use (Finnish says "Finnish time", not
    "Helsinki time"); any other zone by babel's city name."""
    _ = gettext_for(language)
    key = str(zone)
    if key == "Europe/Helsinki":
        return _("%(time)s Helsinki time", time=time_text)
    if key == "Europe/Moscow":
        return _("%(time)s Moscow time", time=time_text)
    city = get_timezone_location(zone, locale=language, return_city=True)
    return _("%(time)s %(city)s time", time=time_text, city=city)


def _day_range(first: date, last: date, lang: str) -> str:
    """ "12–14 декабря", "30. marraskuuta – 2. joulukuuta" (both days included); the year
    only when the range crosses one."""
    if first == last:
        return format_date(first, EVENT_DATE[lang], locale=lang)
    if first.year != last.year:
        return (
            f"{format_date(first, DAY_MONTH_YEAR[lang], locale=lang)} – "
            f"{format_date(last, DAY_MONTH_YEAR[lang], locale=lang)}"
        )
    end = format_date(last, DAY_MONTH[lang], locale=lang)
    if first.month == last.month:
        return f"{format_date(first, DAY[lang], locale=lang)}–{end}"
    return f"{format_date(first, DAY_MONTH[lang], locale=lang)} – {end}"


@dataclass(frozen=True)
class EventWhen:
    """An event's when, as a reader reads it: ``text`` in the reader's clock and ``note``
    the other side's clock ("18:00 по Хельсинки", None when the clocks agree or the event
    is a whole day). :meth:`__str__` joins them as one line."""

    text: str
    note: str | None = None

    def __str__(self) -> str:
        return f"{self.text} ({self.note})" if self.note else self.text


def event_when(
    start: datetime,
    language: str,
    reader_tz: ZoneInfo,
    *,
    event_tz: ZoneInfo,
    end: datetime | None = None,
    all_day: bool = False,
) -> EventWhen:
    """When an event is, for a reader in ``reader_tz`` (the digest's readers): the date and
    time on the reader's clock, then — when the clock where it happens (``event_tz``, the
    zone the source gave or the event's region's) shows another time — that time too, so a
    reader across the border can plan by either ("суббота, 12 декабря, 19:00 (18:00 по
    Хельсинки)"). An end on the same day gives "19:00–21:00"; on another day, both dates.

    A whole-day event (``all_day``, or a start at local midnight with no end: a listing
    that gave only a date) shows its date(s) only, read in ``event_tz``: the festival is on
    the 12th where it is held, whatever the reader's clock. Its ``end`` is the day after its
    last day (iCalendar's exclusive DTEND, as ingestion stores it).
    """
    lang = _lang(language)
    local = start.astimezone(event_tz)
    if all_day or ((local.hour, local.minute) == (0, 0) and end is None):
        first = local.date()
        last = first
        if end is not None:
            last = max(first, (end.astimezone(event_tz) - timedelta(days=1)).date())
        return EventWhen(_day_range(first, last, lang))

    mine = start.astimezone(reader_tz)
    mine_end = end.astimezone(reader_tz) if end is not None and end > start else None
    text = babel_datetime(mine, EVENT_TIME[lang], tzinfo=reader_tz, locale=lang)
    text += _until(mine, mine_end, reader_tz, lang, other_day=True)
    if local.utcoffset() == mine.utcoffset():
        return EventWhen(text)
    # The other side's clock: the time there (and its day when the date differs); its end
    # only when the event ends the same day on both clocks (the note stays short).
    pattern = NOTE_DAY_TIME if local.date() != mine.date() else NOTE_TIME
    there = babel_datetime(local, pattern[lang], tzinfo=event_tz, locale=lang)
    if mine_end is not None and mine_end.date() == mine.date():
        there += _until(local, mine_end, event_tz, lang, other_day=False)
    return EventWhen(text, _zone_note(lang, event_tz, there))


def _until(
    start: datetime, end: datetime | None, tz: ZoneInfo, lang: str, *, other_day: bool
) -> str:
    """What follows an event's start for its end, on the clock of ``tz``: "–21:00" when it
    ends the same day there; on another day " – " and the end's day and time when
    ``other_day``, else nothing."""
    if end is None:
        return ""
    first, last = start.astimezone(tz), end.astimezone(tz)
    if last.date() == first.date():
        return "–" + babel_datetime(last, TIME[lang], tzinfo=tz, locale=lang)
    if other_day:
        return " – " + babel_datetime(last, EVENT_TIME[lang], tzinfo=tz, locale=lang)
    return ""


def format_event(
    start: datetime,
    language: str,
    reader_tz: ZoneInfo,
    *,
    event_tz: ZoneInfo,
    end: datetime | None = None,
    all_day: bool = False,
) -> str:
    """:func:`event_when` as one line: "суббота, 12 декабря, 19:00 (18:00 по Хельсинки)"."""
    return str(event_when(start, language, reader_tz, event_tz=event_tz, end=end, all_day=all_day))


@lru_cache(maxsize=4)
def _towns(path: str, mtime_ns: int) -> dict[str, Term]:
    """Every glossary form → its term (case-folded), for naming towns (cached per file
    version: the glossary is read once, not per item)."""
    del mtime_ns  # part of the cache key only
    towns: dict[str, Term] = {}
    for term in load_glossary(Path(path)).terms:
        for forms in term.forms.values():
            for form in forms:
                towns.setdefault(form.casefold(), term)
    return towns


def town_name(config: Config, town: str, language: str) -> str:
    """A town in the reader's language where the glossary (``translation.glossary``) knows
    it ("Joensuu" → "Йоэнсуу"), else as the source gave it. A missing or broken glossary is
    the translation step's error to report; here the town is just shown as given."""
    if not config.translation.glossary:
        return town
    path = config.resolve(config.translation.glossary)
    try:
        towns = _towns(str(path), path.stat().st_mtime_ns)
    except (OSError, ConfigError):
        return town
    term = towns.get(town.strip().casefold())
    return (term.target(language) if term else None) or town


def format_place(config: Config, place: Mapping[str, Any] | None, language: str) -> str | None:
    """Where an event is: "Йоэнсуу, Carelicum" (town first, in the reader's language; then
    the venue as given), either alone when only one is known, None when neither is."""
    if not place:
        return None
    town = str(place.get("town") or "").strip()
    venue = str(place.get("venue") or "").strip()
    parts = [town_name(config, town, language) if town else "", venue]
    if town and venue and venue.casefold() == town.casefold():
        parts = parts[:1]
    text = ", ".join(p for p in parts if p)
    return text or None


def language_name(code: str, in_language: str) -> str:
    name = Locale.parse(in_language).languages.get(code)
    return name or code


def exchange_title(exchange: ExchangeSettings) -> str:
    return exchange.name or labels(exchange.language)["digest"]


def subject_for(config: Config, exchange: ExchangeSettings, start: date, end: date) -> str:
    """The mail subject: the exchange's name and the period, in the digest's language."""
    title = header_text(exchange_title(exchange))  # a header, and stored as digest.subject
    return f"{title}: {format_period(start, end, exchange.language)}"


# -- rendering -------------------------------------------------------------------------------


@dataclass
class RenderedDigest:
    subject: str
    preheader: str
    html: str
    text: str
    language: str
    items: list[dict[str, Any]] = field(default_factory=list)
    view_url: str = ""
    digest_id: int | None = None


@lru_cache(maxsize=4)
def _inliner() -> css_inline.CSSInliner:
    # The dark-mode and narrow-screen rules live in <style data-css-inline="keep"> and stay
    # in <head>: media queries cannot be inlined. Never fetch remote stylesheets.
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def clean_summary(html: str) -> Markup:
    """Summary HTML (sanitized at ingestion) cleaned once more and marked safe: the only
    place the templates receive markup."""
    cleaned = nh3.clean(
        html,
        tags=SUMMARY_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )
    return Markup(cleaned)  # noqa: S704 - sanitized above by an allow-list


def _wrap(text: str, width: int = 72) -> str:
    paras = [p.strip() for p in text.replace("\r", "").split("\n") if p.strip()]
    return "\n".join(textwrap.fill(p, width=width, break_long_words=False) for p in paras)


def _href(config: Config, item: Mapping[str, Any], digest_id: int | None) -> str | None:
    """Where a story's links point: the signed click redirect when ``digest_id`` is given
    (clicks counted), else the source itself. A link that cannot be signed (not http(s))
    stays as content made it: counting never changes what a reader can open."""
    link = item.get("link")
    if not link or digest_id is None or not is_followable(str(link)):
        return str(link) if link else None
    return click_url(config, digest_id, int(item["position"]), item.get("item_id"), str(link))


def _event_when_of(
    config: Config, it: Mapping[str, Any], language: str, reader_tz: ZoneInfo
) -> EventWhen | None:
    """An item's :func:`event_when` from its content (None when it is not an event)."""
    start = it.get("event_start") or it.get("event_at")  # event_at: content frozen earlier
    if not start:
        return None
    end = it.get("event_end")
    region_tz = config.region_tz(str(it.get("region") or ""))
    return event_when(
        datetime.fromisoformat(start),
        language,
        reader_tz,
        event_tz=_event_zone(it.get("event_timezone"), region_tz),
        end=datetime.fromisoformat(end) if end else None,
        all_day=bool(it.get("all_day")),
    )


def _event_lines(when: EventWhen | None, where: str | None, width: int = 69) -> str:
    """The event line of the text part, wrapped at its parts (the date, the other clock, the
    place) rather than inside them, indented like the rest of an item."""
    if when is None:
        return ""
    parts = [when.text]
    if when.note:
        parts.append(f"({when.note})")
    if where:
        parts[-1] += " ·"
        parts.append(where)
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 1 + len(part) <= width:
            lines[-1] += " " + part
        else:
            lines.append(part)
    return "\n".join("   " + line for line in lines)


def _view_items(
    config: Config,
    content: Mapping[str, Any],
    language: str,
    tz: ZoneInfo,
    *,
    counted_id: int | None = None,
) -> list[dict[str, Any]]:
    """The items as the templates show them; ``counted_id``: the digest whose clicks the
    links count (None: direct links)."""
    views = []
    for it in content["items"]:
        published = datetime.fromisoformat(it["published_at"])
        when = _event_when_of(config, it, language, tz)
        where = format_place(config, it.get("place"), language) if when else None
        summary_html = it.get("summary_html") or ""
        summary_text = it.get("summary_text") or ""
        views.append(
            {
                **it,
                "summary": clean_summary(summary_html) if summary_html.strip() else None,
                "summary_wrapped": _wrap(summary_text),
                "href": _href(config, it, counted_id),
                "published": format_day(published, language, tz),
                "when": str(when) if when else None,
                "when_text": when.text if when else None,
                "when_note": when.note if when else None,
                "where": where,
                "when_wrapped": _event_lines(when, where),
                "original_language_name": language_name(it["original_language"], language),
                "untranslated_note": None
                if it["translated"]
                else untranslated_note(language, language_name(it["original_language"], language)),
                "show_original_title": (
                    not it.get("same_language", False)
                    and it["translated"]
                    and it["original_title"] != it["title"]
                ),
            }
        )
    return views


def _preheader(language: str, news: int, events: int, titles: list[str]) -> str:
    t = labels(language)
    parts = []
    if news:
        parts.append(plural(language, "news", news))
    if events:
        parts.append(plural(language, "events", events))
    head = f" {t['and']} ".join(parts) if parts else t["empty"]
    text = head
    for title in titles:
        candidate = f"{text} · {title}"
        if len(candidate) > 140:
            break
        text = candidate
    return text


def render_digest(
    session: Session,
    config: Config,
    digest: Digest,
    *,
    view_url: str | None = None,
    clicks: bool = True,
) -> RenderedDigest:
    """Render ``digest`` (its frozen content once approved) in its language; ``clicks``:
    story links through the counting redirect when the exchange counts clicks (previews and
    the archive pass False)."""
    exchange = config.exchange(digest.exchange_id)
    content = shown_content(session, config, digest)
    return render_content(
        config, exchange, content, digest_id=digest.id, view_url=view_url, clicks=clicks
    )


def _template_context(
    config: Config,
    exchange: ExchangeSettings,
    content: Mapping[str, Any],
    items: list[dict[str, Any]],
    *,
    view_url: str,
    digest_id: int | None = None,
) -> dict[str, Any]:
    """What the mail templates (``email/digest.html``, ``email/digest.txt``) are given."""
    language = _lang(str(content["language"]))
    t = labels(language)
    start = date.fromisoformat(content["period"]["start"])
    end = date.fromisoformat(content["period"]["end"])
    sections = [
        {"key": key, "label": t[key], "items": [i for i in items if i["section"] == key]}
        for key in ("news", "events")
    ]
    sections = [s for s in sections if s["items"]]
    counts = {key: sum(1 for i in items if i["section"] == key) for key in ("news", "events")}
    preheader = _preheader(language, counts["news"], counts["events"], [i["title"] for i in items])
    count_parts = [plural(language, k, counts[k]) for k in ("news", "events") if counts[k]]
    # The note is owed when a machine wrote any of it; editor-written translations are not.
    machine = any(
        i["translated"]
        and not i.get("same_language")
        and i.get("translated_by") not in ("editor", "original")
        for i in items
    )
    return {
        "lang": language,
        "t": t,
        "title": exchange_title(exchange),
        "subject": subject_for(config, exchange, start, end),
        "period": format_period(start, end, language),
        "preheader": preheader,
        "sections": sections,
        "counts": f" {t['and']} ".join(count_parts),
        "machine_note": t["machine"] if machine else None,
        # The editors' optional intro in the readers' language (the desk, approval/desk.py):
        # paragraphs split on blank lines, escaped like everything else.
        "intro": [
            " ".join(par.split())
            for par in str((content.get("intro") or {}).get(language) or "").split("\n\n")
            if par.strip()
        ],
        "view_url": view_url,
        # The digest's own calendar (newsexchange.digest.ics), linked under the events
        # heading: only a digest with an id has an address, only one with events needs it.
        "calendar_url": digest_calendar_url(config, digest_id)
        if digest_id is not None and counts["events"]
        else None,
        "unsubscribe_url": UNSUBSCRIBE_MARKER,
        "from_name": parseaddr(config.mail.sender(language))[0] or exchange_title(exchange),
    }


def render_content(
    config: Config,
    exchange: ExchangeSettings,
    content: Mapping[str, Any],
    *,
    digest_id: int | None,
    view_url: str | None = None,
    clicks: bool = True,
) -> RenderedDigest:
    """Render :func:`digest_content` data (no database: used for previews and benchmarks).
    Story links count clicks when ``clicks``, the exchange's ``impact.clicks`` and a
    ``digest_id`` all say so; otherwise they go straight to the source."""
    language = _lang(str(content["language"]))
    tz = config.exchange_tz(exchange)
    view_url = view_url or f"{config.public_url}/digests/{digest_id}"
    counted = digest_id if clicks and exchange.impact.clicks else None
    items = _view_items(config, content, language, tz, counted_id=counted)
    ctx = _template_context(
        config, exchange, content, items, view_url=view_url, digest_id=digest_id
    )
    env = environment(language)
    html = env.get_template("email/digest.html").render(ctx)
    html = _inliner().inline(html)
    text = env.get_template("email/digest.txt").render(ctx)
    text = text.rstrip("\n") + "\n"
    plain_items = [
        {
            k: v
            for k, v in i.items()
            # Markup and layout-only fields stay out of the plain items.
            if k not in ("summary", "summary_wrapped", "when_wrapped", "href")
        }
        for i in items
    ]
    return RenderedDigest(
        subject=ctx["subject"],
        preheader=ctx["preheader"],
        html=html,
        text=text,
        language=language,
        items=plain_items,
        view_url=view_url,
        digest_id=digest_id,
    )


# -- the message -----------------------------------------------------------------------------


def to_email(
    rendered: RenderedDigest,
    *,
    config: Config,
    to: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
    message_id: str | None = None,
    calendar: bytes | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text first, then HTML, as RFC 2046 orders them),
    UTF-8, with headers encoded for any script (email.policy.SMTP: RFC 2047 words, CRLF).

    ``to`` may be None for a preview; delivery passes the recipient, its stable
    ``message_id`` and the list headers in ``extra_headers`` (replacing any same-named
    header set here). The per-recipient markers are *not* substituted here.

    ``calendar``: the digest's events as an ``.ics`` (:func:`newsexchange.digest.ics.
    digest_calendar`; None when it has none). It is attached as ``events.ics``
    (``text/calendar; method=PUBLISH``, base64: the bytes keep the CRLF and 75-octet folding
    RFC 5545 wants), and the message becomes multipart/mixed [multipart/alternative [text,
    html], text/calendar]. The attachment is the same in every recipient's copy.
    """
    msg = EmailMessage(policy=POLICY)  # SMTP, with folding every decoder reads back
    # Every value through header_text: the subject carries the exchange's name, the list
    # headers a list name; a CR or LF there would be refused by the email package.
    msg["From"] = header_text(config.mail.sender(rendered.language))
    if to:
        msg["To"] = header_text(to)
    if config.mail.reply_to:
        msg["Reply-To"] = header_text(config.mail.reply_to)
    msg["Subject"] = header_text(rendered.subject)
    msg["Date"] = format_datetime((now or datetime.now(UTC)).astimezone(UTC))
    domain = _domain(config.mail.from_)
    msg["Message-ID"] = message_id or make_msgid(domain=domain)
    for name, value in (extra_headers or {}).items():
        if name in msg:
            del msg[name]
        msg[name] = header_text(value)
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte=_cte(rendered.text))
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte=_cte(rendered.html))
    if calendar:
        msg.add_attachment(
            calendar,
            maintype="text",
            subtype="calendar",
            filename="events.ics",
            params={"charset": "utf-8", "method": "PUBLISH"},
        )
    # After the bodies and the attachment: set_content() clears every Content-* header it
    # finds, and turning the message into multipart/mixed moves them into the inner part.
    msg["Content-Language"] = rendered.language
    return msg


def _cte(text: str) -> str:
    """The shorter of quoted-printable and base64 (as the email package's own heuristic
    does): QP keeps Finnish and English readable, but spends 6 bytes on each Cyrillic letter
    where base64 spends under 3, and Gmail clips messages past ~102 KB. Never 8bit: not
    every relay speaks 8BITMIME."""
    data = text.encode("utf-8")
    qp = len(binascii.b2a_qp(data, istext=True))
    return "base64" if qp > (len(data) * 4) // 3 + len(data) // 57 else "quoted-printable"


def _domain(from_: str) -> str:
    addr = parseaddr(from_)[1]
    try:
        return Address(addr_spec=addr).domain or "newsexchange.invalid"
    except (ValueError, IndexError):
        return "newsexchange.invalid"
