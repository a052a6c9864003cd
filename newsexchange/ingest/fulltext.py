"""Full text for ``fulltext: true`` sources: which entries need their article page, the page's
main text (``trafilatura``), and what the writer stores of it.

Many regional feeds give a one-line teaser; the exchange translates and mails the summary,
so for such sources the summary becomes the story's first paragraphs, read from the article
page itself. The decisions, and why:

- **Which pages.** An entry's page is read when the source has no item for it yet, or has
  one whose page was never tried (``items.fulltext_at`` is NULL: it came over the per-run
  cap, or the source had ``fulltext`` off then). Entries are matched to stored items as
  :mod:`.decide` matches them (identity, then link). Entries whose link several entries of
  the feed share (listings pointing at one page) are skipped: that page is not their story.
  At most :data:`ARTICLES_PER_RUN` pages per source and run, in feed order (newest first in
  most feeds); the rest are read by the next runs.
- **Once.** ``fulltext_at`` is set when the page was tried, whatever came of it (text, too
  little text, 404, timeout, not HTML, a refused address): a page is never fetched again for
  that item, so a dead outlet costs one request per story, not one per run.
- **The hash stays the feed's.** The decider hashes the entry as the feed gives it (the
  teaser), and the text replaces only the stored summary, so an unchanged feed re-fetched
  comes out unchanged. When the feed later changes the item (a corrected title), the update
  keeps the stored summary of an item whose page was tried: the teaser never comes back over
  the full text, and the page is not read again. (The price: a teaser edit of an item whose
  page failed is not applied either.)
- **Teaser wins ties.** Text shorter than the teaser, or under :data:`MIN_ARTICLE_CHARS`
  (navigation, a cookie banner: what extraction finds on a page without an article), keeps
  the teaser.
- **Bounded.** The summary is whole paragraphs up to ``fetch.fulltext_chars``; the paragraph
  that does not fit is cut at its last sentence end that does (or left out when none does).
- **Same fetcher.** Pages go through the run's fetcher: the same size and time limits, the
  same address guard and per-host slots as feeds; on top, at most ``fetch.per_host`` pages of
  one source are in flight at once, so an outlet's articles are read a few at a time.

The story fingerprint and the detected language stay those of the feed's text.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lxml import etree  # type: ignore[import-untyped]

from newsexchange.errors import FetchError
from newsexchange.ingest.clean import sanitize_html, text_of_safe_html
from newsexchange.ingest.decide import content_hash, identities
from newsexchange.ingest.fetch import HTML_ACCEPT, Fetcher
from newsexchange.ingest.model import ParsedEntry

__all__ = [
    "ARTICLES_PER_RUN",
    "MIN_ARTICLE_CHARS",
    "Article",
    "NotAnArticle",
    "PagePlan",
    "Pages",
    "StoredPage",
    "extract_article",
    "first_paragraphs",
    "plan_pages",
    "read_pages",
]

log = logging.getLogger("newsexchange.ingest")

#: Article pages read per source and run; the rest wait for the next run.
ARTICLES_PER_RUN = 50
#: Less main text than this is a page without an article (menus, banners), not a story.
MIN_ARTICLE_CHARS = 80
_HTML_TYPES = ("text/html", "application/xhtml+xml")
# A sentence ends with . ! ? … (optionally a closing quote or bracket) before a space.
_SENTENCE_END = re.compile(r"[.!?…][\"'»”)\]]*(?=\s)")


# -- which pages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPage:
    """A stored item of the source, as far as its page is concerned."""

    id: int
    identity: str
    link: str | None
    tried: bool  # fulltext_at is set


@dataclass(frozen=True)
class PagePlan:
    links: list[str]  # pages to read, in feed order
    tried_ids: frozenset[int]  # stored items whose page was tried: keep their summary
    deferred: int = 0  # pages over the per-run cap
    teasers: dict[str, str] = field(default_factory=dict)  # link → the feed's summary_text


def plan_pages(
    entries: Sequence[ParsedEntry], stored: Iterable[StoredPage], *, cap: int = ARTICLES_PER_RUN
) -> PagePlan:
    """The pages to read for these entries, given the source's stored items that match them
    (by identity or link). Pure."""
    by_identity: dict[str, StoredPage] = {}
    by_link: dict[str, list[StoredPage]] = {}
    for s in stored:
        by_identity[s.identity] = s
        if s.link:
            by_link.setdefault(s.link, []).append(s)
    keys = identities(entries, [content_hash(e) for e in entries])
    link_count: dict[str, int] = {}
    for e in entries:
        if e.link:
            link_count[e.link] = link_count.get(e.link, 0) + 1
    tried: set[int] = set()
    links: list[str] = []
    teasers: dict[str, str] = {}
    deferred = 0
    for e, key in zip(entries, keys, strict=True):
        old = by_identity.get(key)
        if old is None and e.link and len(by_link.get(e.link, [])) == 1:
            old = by_link[e.link][0]
        if old is not None and old.tried:
            tried.add(old.id)
            continue
        link = e.link
        if not link or link_count[link] > 1 or link in links:
            continue
        if urlsplit(link).scheme.lower() not in ("http", "https"):
            continue
        if len(links) >= cap:
            deferred += 1
            continue
        links.append(link)
        teasers[link] = e.summary_text
    return PagePlan(links, frozenset(tried), deferred, teasers)


# -- the text ---------------------------------------------------------------------------------


class NotAnArticle(Exception):
    """The page gave no usable main text (the message says why)."""


def _paragraphs(body: bytes, url: str) -> list[str]:
    """The main text's paragraphs, as trafilatura finds them (headings, lists, tables and
    comments left out: the title is the item's own, and the rest reads badly in a mail)."""
    import trafilatura  # ~10 MB with its helpers (and py3langid): only fulltext: true sources

    xml = trafilatura.extract(
        body,
        url=url,
        output_format="xml",
        include_comments=False,
        include_tables=False,
        include_images=False,
        include_links=False,
        favor_precision=True,
        # Not deduplicate=True: its cache of seen segments is process-wide, so a paragraph
        # seen on an earlier page would vanish from this one (and results would depend on
        # what the process read before).
        deduplicate=False,
    )
    if not xml:
        return []
    try:
        # trafilatura's own output, not the page's bytes; still read without entities.
        # (A parser per call: lxml's parsers are not safe to share between threads.)
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        root = etree.fromstring(xml.encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return []
    out: list[str] = []
    for p in root.iterfind(".//main/p"):
        text = " ".join("".join(p.itertext()).split())
        if text:
            out.append(text)
    return out


def first_paragraphs(paragraphs: Sequence[str], limit: int) -> list[str]:
    """Whole paragraphs while they fit in ``limit`` characters (one space between them);
    the next is cut at its last sentence end that fits. A first paragraph without such a
    sentence end is cut at a word ("…"), so a story never comes out empty."""
    out: list[str] = []
    used = 0
    for para in paragraphs:
        room = limit - used - (1 if out else 0)
        if len(para) <= room:
            out.append(para)
            used += len(para) + (1 if len(out) > 1 else 0)
            continue
        ends = [m.end() for m in _SENTENCE_END.finditer(para + " ") if m.end() <= room]
        if ends:
            out.append(para[: ends[-1]])
        elif not out:
            cut = para[: max(room - 1, 1)]
            space = cut.rfind(" ")
            out.append((cut[:space] if space > room // 2 else cut).rstrip(" ,;:.-–—") + "…")
        break
    return out


@dataclass(frozen=True)
class Article:
    """What a page gave: safe HTML (paragraphs as ``<p>``) and its plain text."""

    summary_html: str
    summary_text: str


def extract_article(body: bytes, *, url: str, content_type: str | None, limit: int) -> Article:
    """The article's first paragraphs, bounded by ``limit`` characters; raises
    :class:`NotAnArticle` for a page that is not HTML or has too little main text."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and ctype not in _HTML_TYPES:
        raise NotAnArticle(f"not an HTML page ({ctype})")
    paras = first_paragraphs(_paragraphs(body, url), limit)
    if sum(len(p) for p in paras) < MIN_ARTICLE_CHARS:
        raise NotAnArticle("no article text found on the page")
    safe = sanitize_html("".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paras), url)
    return Article(safe, text_of_safe_html(safe, limit + len(paras)))


# -- reading them -----------------------------------------------------------------------------


@dataclass
class Pages:
    """What reading one source's pages came to; attached to its ``Fetched`` for the writer."""

    plan: PagePlan
    articles: dict[str, Article] = field(default_factory=dict)  # link → text
    tried: set[str] = field(default_factory=set)  # every link requested (or refused)
    failed: dict[str, str] = field(default_factory=dict)  # link → why it could not be read
    kept_teaser: int = 0  # read, but no more text than the feed's

    def problem(self) -> str | None:
        """The note for the source's outcome, or None when every page was read."""
        if not self.failed:
            return None
        link = next(link for link in self.plan.links if link in self.failed)
        return (
            f"{len(self.failed)} of {len(self.tried)} article pages could not be read: "
            f"{link}: {self.failed[link]}"
        )

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(texts, marks)`` for :func:`~newsexchange.db.queries.items.set_fulltext`: the
        new summaries by link, and the other links tried, whose items keep their summary and
        are only marked as tried."""
        texts: list[dict[str, Any]] = []
        marks: list[dict[str, Any]] = []
        for link in self.plan.links:
            if link not in self.tried:
                continue
            art = self.articles.get(link)
            if art is not None:
                texts.append(
                    {"b_link": link, "b_html": art.summary_html, "b_text": art.summary_text}
                )
            else:
                marks.append({"b_link": link})
        return texts, marks


async def read_pages(
    fetcher: Fetcher, plan: PagePlan, *, per_host: int, limit: int, source: str
) -> Pages:
    """Fetch and extract the planned pages, at most ``per_host`` at a time; never raises for
    a page (each failure is noted in :attr:`Pages.failed`)."""
    pages = Pages(plan)
    slots = asyncio.Semaphore(per_host)

    async def one(link: str) -> None:
        async with slots:
            pages.tried.add(link)
            try:
                res = await fetcher.fetch(link, accept=HTML_ACCEPT)
                if res.body is None:
                    raise NotAnArticle("no body")
                art = await asyncio.to_thread(
                    extract_article,
                    res.body,
                    url=res.final_url,
                    content_type=res.content_type,
                    limit=limit,
                )
                if len(art.summary_text) > len(plan.teasers.get(link, "")):
                    pages.articles[link] = art
                else:
                    pages.kept_teaser += 1  # no more than the feed gave: not a failure
            except FetchError as exc:
                pages.failed[link] = f"HTTP {exc.status}" if exc.status else exc.message
            except NotAnArticle as exc:
                pages.failed[link] = str(exc)
            except Exception as exc:  # an extractor bug: this page's teaser stays
                log.warning("article extraction failed", exc_info=True, extra={"url": link})
                pages.failed[link] = f"could not extract: {type(exc).__name__}"

    await asyncio.gather(*(one(link) for link in plan.links))
    if pages.failed:
        log.warning(
            "article pages could not be read",
            extra={"source": source, "failed": len(pages.failed), "note": pages.problem()},
        )
    return pages
