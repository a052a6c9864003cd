"""A small, realistic exchange for the digest tests: stored items, translations, story groups.

Items and translations are written straight through the ORM (ingestion and translation are
other steps); times are chosen around the 1–15 November 2026 period boundary, where Helsinki
is UTC+2 and Moscow UTC+3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Item, Source, StoryGroup, Translation

SAMPLE_CONFIG = """\
sources:
  - {id: yle-pk, name: Yle Pohjois-Karjala, region: joensuu, language: fi,
     url: "https://yle.fi/rss/pk", weight: 1.5}
  - {id: karjalainen, name: Karjalainen, region: joensuu, language: fi,
     url: "https://www.karjalainen.fi/rss"}
  - {id: joensuu-events, name: Joensuun tapahtumat, region: joensuu, language: fi,
     category: events, url: "https://www.joensuu.fi/tapahtumat.rss"}
  - {id: gtrk, name: ГТРК «Карелия», region: petrozavodsk, language: ru,
     url: "https://gtrk-karelia.ru/rss/", weight: 1.5}
  - {id: stolica, name: «Столица на Onego», region: petrozavodsk, language: ru,
     url: "https://stolicaonego.ru/rss/"}
exchanges:
  - id: joensuu-to-petrozavodsk
    name: Новости Йоэнсуу и Северной Карелии
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [editor@example.fi]
  - id: petrozavodsk-to-joensuu
    name: Petroskoin ja Karjalan tasavallan uutiset
    from: [petrozavodsk]
    to: joensuu
    language: fi
    editors: [editor@example.fi]
  - id: border-en
    name: Joensuu–Petrozavodsk news exchange
    from: [joensuu, petrozavodsk]
    language: en
    editors: [editor@example.fi]
"""

HOSTILE_TITLE = 'Valtuusto <script>alert("x")</script> & "budjetti"'


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@dataclass
class Row:
    key: str
    source: str
    title: str
    published: datetime
    summary: str
    tr: dict[str, str]  # language → translated title (summary derived)
    category: str = "news"
    event_start: datetime | None = None
    group: str | None = None


ROWS: list[Row] = [
    Row(
        "bridge-yle",
        "yle-pk",
        "Joensuun uusi silta avataan joulukuussa",
        utc(2026, 11, 12, 9, 0),
        "Pielisjoen ylittävä silta valmistuu etuajassa; liikenne alkaa 15. joulukuuta.",
        {
            "ru": "Новый мост в Йоэнсуу откроют в декабре",
            "en": "Joensuu's new bridge opens in December",
        },
        group="bridge",
    ),
    Row(
        "bridge-karjalainen",
        "karjalainen",
        "Uusi silta avautuu joulukuussa",
        utc(2026, 11, 12, 11, 0),
        "Kaupunki vahvisti sillan avajaispäivän.",
        {"ru": "Новый мост откроется в декабре", "en": "New bridge to open in December"},
        group="bridge",
    ),
    Row(
        "jobs",
        "karjalainen",
        "Pohjois-Karjalan työttömyys laski lokakuussa",
        utc(2026, 11, 5, 7, 30),
        "Työttömiä työnhakijoita oli 9,8 prosenttia työvoimasta, vähemmän kuin vuosi sitten.",
        {
            "ru": "Безработица в Северной Карелии снизилась в октябре",
            "en": "Unemployment in North Karelia fell in October",
        },
    ),
    Row(
        "hostile",
        "yle-pk",
        HOSTILE_TITLE,
        utc(2026, 11, 8, 12, 0),
        "Valtuusto käsittelee ensi vuoden talousarviota.",
        {
            "ru": 'Совет <script>alert("x")</script> & «бюджет»',
            "en": 'Council <script>alert("x")</script> & "budget"',
        },
    ),
    Row(
        "xmas",
        "joensuu-events",
        "Joulunavaus Joensuun torilla",
        utc(2026, 11, 10, 8, 0),
        "Joulupukki saapuu torille, ohjelmassa musiikkia ja ilotulitus.",
        {
            "ru": "Открытие Рождества на площади Йоэнсуу",
            "en": "Christmas opening on Joensuu square",
        },
        category="events",
        event_start=utc(2026, 11, 28, 16, 0),
    ),
    Row(
        "rock",
        "karjalainen",
        "Ilosaarirockin ensimmäiset esiintyjät julkistettiin",
        utc(2026, 11, 14, 15, 0),
        "Festivaali julkisti kesän ensimmäiset nimet.",
        {"en": "Ilosaarirock announces its first performers"},  # no Russian yet
    ),
    Row(
        # 23:30 in Helsinki on the 15th, already 00:30 on the 16th in Moscow.
        "late",
        "yle-pk",
        "Myöhäisillan uutinen: lumimyrsky katkaisi sähköt",
        utc(2026, 11, 15, 21, 30),
        "Tuhannet taloudet ilman sähköä Ilomantsissa.",
        {
            "ru": "Снежная буря оставила без света тысячи домов",
            "en": "Snowstorm cuts power to thousands of homes",
        },
    ),
    Row(
        "before",
        "yle-pk",
        "Lokakuun viimeinen uutinen",
        utc(2026, 10, 31, 21, 30),  # 23:30 Helsinki on 31 Oct, 00:30 Moscow on 1 Nov
        "Lokakuun lopun uutinen.",
        {"ru": "Последняя новость октября", "en": "The last news of October"},
    ),
    Row(
        "bridge-ptz",
        "gtrk",
        "В Петрозаводске открыли новый мост через Лососинку",
        utc(2026, 11, 6, 10, 0),
        "Движение по мосту открыто после двухлетнего ремонта.",
        {
            "fi": "Petroskoissa avattiin uusi silta Lososinka-joen yli",
            "en": "New bridge over the Lososinka opens in Petrozavodsk",
        },
    ),
    Row(
        "lights",
        "stolica",
        "Фестиваль огней на Онежской набережной",
        utc(2026, 11, 9, 9, 0),
        "Световые инсталляции будут работать каждый вечер.",
        {
            "fi": "Valojen festivaali Äänisen rantakadulla",
            "en": "Festival of lights on the Onego embankment",
        },
        category="events",
        event_start=utc(2026, 11, 20, 15, 0),
    ),
    Row(
        "fares",
        "stolica",
        "Цены на проезд в Петрозаводске вырастут с января",
        utc(2026, 11, 13, 6, 0),
        "Стоимость поездки в автобусе и троллейбусе составит 45 рублей.",
        {
            "fi": "Petroskoin joukkoliikenteen hinnat nousevat tammikuussa",
            "en": "Public transport fares in Petrozavodsk to rise in January",
        },
    ),
]

LANG_OF_SOURCE = {
    "yle-pk": ("fi", "joensuu"),
    "karjalainen": ("fi", "joensuu"),
    "joensuu-events": ("fi", "joensuu"),
    "gtrk": ("ru", "petrozavodsk"),
    "stolica": ("ru", "petrozavodsk"),
}


def add_item(
    db: Database,
    *,
    key: str,
    source: str,
    title: str,
    published: datetime,
    summary: str = "",
    tr: dict[str, str] | None = None,
    category: str = "news",
    event_start: datetime | None = None,
    group: str | None = None,
) -> int:
    """Store one item (and its source and story group when new); returns its id."""
    language, region = LANG_OF_SOURCE.get(source, ("fi", "joensuu"))
    with db.session() as s:
        if s.get(Source, source) is None:
            s.add(Source(id=source, config_url=f"https://{source}.example/rss", url="u"))
            s.flush()
        group_id = None
        if group:
            sg = s.scalars(select(StoryGroup).where(StoryGroup.fingerprint == group)).first()
            if sg is None:
                sg = StoryGroup(fingerprint=group)
                s.add(sg)
                s.flush()
            group_id = sg.id
        item = Item(
            source_id=source,
            identity=key,
            guid=key,
            link=f"https://{source}.example/{key}",
            title=title,
            summary_html=f"<p>{summary}</p>" if summary else "",
            summary_text=summary,
            region=region,
            category=category,
            language=language,
            published_at=published,
            event_start=event_start,
            content_hash=key,
            fingerprint=group,
            story_group_id=group_id,
            first_seen_at=published,
            updated_at=published,
        )
        for lang, tr_title in (tr or {}).items():
            item.translations.append(
                Translation(
                    language=lang,
                    title=tr_title,
                    summary_text=f"[{lang}] {summary}",
                    summary_html=f"<p>[{lang}] {summary}</p>",
                    provider="libre",
                    status="done",
                )
            )
        s.add(item)
        s.flush()
        return item.id


def seed(db: Database) -> dict[str, int]:
    """Store the sample items; returns key → item id."""
    ids: dict[str, int] = {}
    for r in ROWS:
        ids[r.key] = add_item(
            db,
            key=r.key,
            source=r.source,
            title=r.title,
            published=r.published,
            summary=r.summary,
            tr=r.tr,
            category=r.category,
            event_start=r.event_start,
            group=r.group,
        )
    return ids


def sample_config(write_config: Callable[..., Config], *, ru_options: str = "") -> Config:
    """The sample feeds.yaml; ``ru_options`` are extra keys of the Russian exchange
    (``"include_untranslated: true"`` …), one per line."""
    text = SAMPLE_CONFIG
    if ru_options:
        extra = "".join(f"    {line.strip()}\n" for line in ru_options.strip().splitlines())
        text = text.replace("    language: ru\n", "    language: ru\n" + extra, 1)
    return write_config(text)


def test_sample_rows_have_unique_keys_and_known_sources() -> None:
    keys = [r.key for r in ROWS]
    assert len(keys) == len(set(keys))
    assert {r.source for r in ROWS} <= set(LANG_OF_SOURCE)
