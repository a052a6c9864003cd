"""Feed bytes → :class:`ParsedFeed`: charset, parser choice, cleaning, UTC dates.

Two parsers, one answer (docs/parsing.md has the rules in full and the figures):

* **fast path** (``parser="fast"``): lxml's strict XML parser plus a small extractor for RSS
  2.0/0.9x, RSS 1.0 (RDF) and Atom 1.0, ~8× faster than feedparser with cleaning included.
  It only answers when it can vouch for giving feedparser's answer: the charset is settled,
  the document is well-formed (HTML 4 entities such as ``&laquo;`` and whitespace before
  ``<?xml`` are tolerated, as feedparser tolerates them), has no DTD/entity declarations,
  ``xml:base``, XHTML content or repeated fields, and every element it skips is one
  feedparser has no handler for. Anything else makes it step aside (:class:`_StepAside`).
* **feedparser** (``parser="feedparser"``): the reference, for everything the fast path
  declines: ill-formed XML (it recovers the readable items and says what was wrong), Atom
  0.3, CDF, exotic charsets, charset conflicts between HTTP and the XML declaration.
* **JSON Feed** (``parser="json"``), read directly: feedparser 6.0 has no JSON support.

All paths end in the same :func:`_entry` builder, so cleaning, link, guid and date rules are
the same whichever parser read the bytes; tests/test_corpus.py checks that the fast path and
the feedparser path agree on every corpus feed the fast path accepts.

Safety: XML entity declarations never reach an expanding parser. The fast path refuses any
document with ``<!ENTITY`` / ``<!DOCTYPE`` and its lxml parser has entity resolution,
network access and DTD loading off; feedparser strips every entity declaration except
plain literal ones before expat sees the document (``feedparser.sanitizer.replace_doctype``),
expat refuses external entities and itself limits entity amplification (expat ≥ 2.4).
Nothing here raises anything but :class:`~newsexchange.errors.FetchError`.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz
from html import escape as html_escape
from html import unescape as html_unescape
from html.entities import name2codepoint
from typing import Any
from urllib.parse import urljoin

import feedparser
from feedparser.datetimes import _parse_date
from feedparser.mixin import _FeedParserMixin
from lxml import etree  # type: ignore[import-untyped]

try:
    from charset_normalizer import from_bytes as _from_bytes
except ImportError:  # pragma: no cover - it ships with our HTTP stack
    _from_bytes = None  # type: ignore[assignment]

from newsexchange.errors import FetchError
from newsexchange.ingest.clean import (
    clean_url,
    collapse,
    sanitize_html,
    scrub_feed,
    text_of_safe_html,
    to_text,
)
from newsexchange.ingest.model import ParsedEntry, ParsedFeed
from newsexchange.textclean import UNSTORABLE, strip_unstorable

log = logging.getLogger(__name__)

# --- charsets -----------------------------------------------------------------------------

_XML_DECL = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_XML_DECL_ANY = re.compile(rb"^\s*<\?xml[^>]*\?>")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
#: Encodings the fast path decodes itself; anything else (UTF-16/32, EBCDIC, CJK
#: multi-byte …) goes to feedparser, which has the BOM/declaration rules for them.
_FAST_CODECS = frozenset(
    {
        "utf-8", "ascii", "cp1251", "koi8-r", "koi8-u", "cp1252", "latin-1", "iso8859-15",
        "iso8859-5", "cp1257", "iso8859-13", "iso8859-4", "iso8859-2", "cp1250",
    }
)  # fmt: skip


def _codec(name: str | bytes | None) -> str | None:
    if not name:
        return None
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    try:
        return codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None


@dataclass(frozen=True)
class _Charset:
    body: bytes  # UTF-8 (declaration rewritten) when ``settled``, else the original bytes
    settled: bool  # True: decoded and re-encoded by us; the fast path may read ``body``
    encoding: str | None  # the encoding the bytes were read in, when known
    note: str | None = None  # a recoverable problem worth recording (e.g. detected charset)
    content_type: str | None = None  # what to tell feedparser


def _cyrillic_guess(body: bytes) -> str | None:
    """windows-1251 or KOI8-R for undeclared Russian text, else None.

    In KOI8-R the lower-case Cyrillic letters sit at 0xC0–0xDF, in windows-1251 at
    0xE0–0xFF; running Russian text is overwhelmingly lower case, so whichever reading
    gives mostly lower-case letters is the right one. Cheap and exact on real sentences.
    """
    high = sum(1 for b in body[:20000] if b >= 0xC0)
    if high < 8:
        return None
    lower_win = sum(1 for b in body[:20000] if b >= 0xE0)
    if lower_win * 2 > high:
        return "cp1251"
    return "koi8-r"


def _detect(body: bytes) -> str | None:
    guess = _cyrillic_guess(body)
    if guess:
        return guess
    if _from_bytes is None:  # pragma: no cover - it ships with our HTTP stack
        return None
    best = _from_bytes(body[:65536]).best()
    return _codec(best.encoding) if best else None


def _to_utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if _XML_DECL_ANY.match(data):
        data = _XML_DECL_ANY.sub(b'<?xml version="1.0" encoding="utf-8"?>', data, count=1)
    return data


def _utf8_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip()
    return f"{media}; charset=utf-8"


def decide_charset(body: bytes, content_type: str | None) -> _Charset:
    """Decide how to read ``body``: BOM, then HTTP charset, then XML declaration, then
    detection. When HTTP and the declaration disagree and one says UTF-8, the bytes decide
    (the conflict is recorded); other disagreements are left to feedparser's RFC 3023
    rules."""
    if body.startswith(codecs.BOM_UTF8):
        body = body[3:]
        bom: str | None = "utf-8"
    elif body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or body[:4] in (
        codecs.BOM_UTF32_LE,
        codecs.BOM_UTF32_BE,
    ):
        return _Charset(body, False, None, content_type=content_type)
    else:
        bom = None
    m = _CHARSET_PARAM.search(content_type or "")
    http = _codec(m.group(1)) if m else None
    if m and http is None:
        return _Charset(body, False, None, content_type=content_type)  # unknown charset name
    dm = _XML_DECL.match(body[:512])
    declared = _codec(dm.group(1)) if dm else None
    if dm and declared is None:
        return _Charset(body, False, None, content_type=content_type)
    if bom and ((http and http != "utf-8") or (declared and declared != "utf-8")):
        return _Charset(body, False, None, content_type=content_type)
    note = None
    if http and declared and http != declared and not {http, declared} <= {"utf-8", "ascii"}:
        if "utf-8" not in (http, declared):
            return _Charset(body, False, None, content_type=content_type)
        # One of them says UTF-8. Cyrillic in windows-1251 or KOI8-R is never valid UTF-8
        # by accident, so the bytes settle it. (feedparser would let HTTP win per RFC 3023
        # and turn a mislabelled Russian feed into mojibake.)
        other = declared if http == "utf-8" else http
        try:
            body.decode("utf-8")
            chosen = "utf-8"
        except UnicodeDecodeError:
            chosen = other
        note = f"charset conflict: HTTP says {http}, the document says {declared}; read as {chosen}"
        http = declared = chosen
    encoding = bom or http or declared
    if encoding is None:
        if body.isascii():
            return _Charset(body, True, "utf-8", content_type=_utf8_content_type(content_type))
        try:
            body.decode("utf-8")
            return _Charset(body, True, "utf-8", content_type=_utf8_content_type(content_type))
        except UnicodeDecodeError:
            pass
        detected = _detect(body)
        if detected is None:
            return _Charset(body, False, None, content_type=content_type)
        try:
            text = body.decode(detected)
        except UnicodeDecodeError:
            return _Charset(body, False, None, content_type=content_type)
        # Detected, so feedparser must not second-guess it: it gets UTF-8 bytes too, but the
        # fast path does not vouch for a guessed charset's edge cases.
        return _Charset(
            _to_utf8(text),
            False,
            detected,
            note=f"no charset declared; detected {detected}",
            content_type=_utf8_content_type(content_type),
        )
    if encoding not in _FAST_CODECS:
        return _Charset(body, False, encoding, content_type=content_type)
    utf8_ct = _utf8_content_type(content_type) or (note and "application/xml; charset=utf-8")
    if encoding in ("utf-8", "ascii") and body.isascii():
        return _Charset(body, True, encoding, note, utf8_ct)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        return _Charset(body, False, encoding, content_type=content_type)
    if encoding == "utf-8" and not note:
        return _Charset(body, True, encoding, note, utf8_ct)
    return _Charset(_to_utf8(text), True, encoding, note, utf8_ct)


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


def _fast_date(value: str) -> datetime | None:
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


def _struct_to_dt(st: Any) -> datetime | None:
    try:
        return datetime(st[0], st[1], st[2], st[3], st[4], st[5], tzinfo=UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _lenient_date(value: str) -> datetime | None:
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
    dt = _fast_date(value)
    if dt is not None:
        return dt
    st = _parse_date(value)
    if st is not None:
        return _struct_to_dt(st)
    return _lenient_date(value)


# --- the shared entry builder -------------------------------------------------------------

_LOOKS_HTML = re.compile(r"<[A-Za-z/!]|&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]+\d*);")


def _plain(value: str | None) -> str:
    """Plain text of a title/author that may carry markup or entities."""
    if not value:
        return ""
    value = strip_unstorable(value)
    if _LOOKS_HTML.search(value):
        return to_text(value, 10_000)
    return collapse(value)


@dataclass
class _RawEntry:
    """What either parser found for one item, before cleaning (strings as in the feed)."""

    guid: str | None = None
    link: str | None = None
    title: str | None = None
    summary: str | None = None
    content: str | None = None
    author: str | None = None
    image: str | None = None
    published: datetime | None = None
    updated: datetime | None = None


#: Summary HTML longer than this is cut (at a tag boundary) before cleaning. Many Russian
#: feeds carry whole articles in <description>; a digest needs the lead, and cleaning cost
#: grows with length (about 8 µs per 100 characters).
SUMMARY_HTML_MAX_CHARS = 6000


def _bounded(html: str) -> str:
    if len(html) <= SUMMARY_HTML_MAX_CHARS:
        return html
    cut = html.rfind(">", 0, SUMMARY_HTML_MAX_CHARS)
    # Past the last complete tag; the cleaner closes whatever was left open.
    return html[: cut + 1] if cut > SUMMARY_HTML_MAX_CHARS // 2 else html[:SUMMARY_HTML_MAX_CHARS]


_IMG_SRC = re.compile(r'<img src="(https?://[^"]+)"')


def _first_image(safe_html: str) -> str | None:
    """The first picture in the cleaned summary (tracking pixels are already gone), for
    items that name no image of their own: the digest shows one per story."""
    if "<img" not in safe_html:
        return None
    m = _IMG_SRC.search(safe_html)
    return html_unescape(m.group(1)) if m else None


def _unstorable_gone(raw: _RawEntry) -> _RawEntry:
    """``raw`` without unstorable characters (textclean), before the cleaners see it: a lone
    surrogate (JSON Feed's "\ud800") cannot even be handed to nh3, which is Rust."""
    for name in ("guid", "link", "title", "summary", "content", "author", "image"):
        value = getattr(raw, name)
        if value and UNSTORABLE.search(value):
            setattr(raw, name, UNSTORABLE.sub("", value))
    return raw


def _entry(raw: _RawEntry, *, base: str, summary_chars: int) -> ParsedEntry:
    raw = _unstorable_gone(raw)
    link = clean_url(raw.link, base)
    # Relative URLs in a summary resolve against the document's URL, as feedparser's do.
    summary_html = sanitize_html(_bounded(raw.summary or raw.content or ""), base)
    guid = collapse(raw.guid) if raw.guid else None
    return ParsedEntry(
        guid=guid or None,
        link=link,
        title=_plain(raw.title),
        summary_html=summary_html,
        summary_text=text_of_safe_html(summary_html, summary_chars),
        author=_plain(raw.author) or None,
        image_url=clean_url(raw.image, base) or _first_image(summary_html),
        published_at=raw.published or raw.updated,
        updated_at=raw.updated,
    )


# --- HTML pages and empty bodies ----------------------------------------------------------

_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_ALT_LINK = re.compile(
    r"""<link\b[^>]*type=["']application/(?:rss|atom)\+xml["'][^>]*>""", re.IGNORECASE
)
_HREF = re.compile(r"""href=["']([^"']+)["']""", re.IGNORECASE)


def _not_a_feed(body: bytes, url: str, content_type: str | None) -> FetchError:
    """The error for an HTML page: says so, and names the feed the page links to."""
    text = body[:65536].decode("utf-8", "replace")
    hint = ""
    m = _ALT_LINK.search(text)
    if m:
        h = _HREF.search(m.group(0))
        feed = clean_url(h.group(1), url) if h else None
        if feed:
            hint = f"; the page links to a feed at {feed}"
    ct = f" ({content_type.split(';')[0].strip()})" if content_type else ""
    return FetchError(
        f"got an HTML page{ct} where an RSS or Atom feed was expected{hint}",
        url=url,
        retryable=False,
    )


# --- fast path ----------------------------------------------------------------------------

ATOM = "http://www.w3.org/2005/Atom"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS1 = "http://purl.org/rss/1.0/"
DC = "http://purl.org/dc/elements/1.1/"
DCTERMS = "http://purl.org/dc/terms/"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
MEDIA = "http://search.yahoo.com/mrss/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class _StepAside(Exception):
    """The fast path cannot vouch for this document; feedparser reads it instead."""


_local = threading.local()


def _xml_parser() -> etree.XMLParser:
    # lxml parsers are not safe to share between threads; one per thread, reused.
    p: etree.XMLParser | None = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            recover=False,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
            strip_cdata=True,
        )
        _local.parser = p
    return p


# Cheap byte checks for what the fast path does not implement; finding one means feedparser.
_REFUSE_MARKERS = (b"<!ENTITY", b"<!DOCTYPE", b"<!doctype", b"xml:base", b'"xhtml"', b"'xhtml'")


_URIFIXER = re.compile(r"^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")


def _resolve(base: str, uri: str) -> str:
    """feedparser's ``_urljoin``: join, after collapsing extra slashes after the scheme."""
    try:
        return urljoin(base, _URIFIXER.sub(r"\1\3", uri))
    except ValueError:
        return ""


# Which elements the fast path may skip is decided the way feedparser itself dispatches:
# it calls ``_start_<prefix>_<name>`` when it has such a handler and otherwise files the
# element under its name, where none of the fields we read can see it. So an element
# without a feedparser handler is skipped; one with a handler we don't mirror makes the
# fast path step aside, unless it is listed here as touching none of our fields. Skipped
# elements must have no child elements (feedparser's handlers ignore nesting: a <title>
# inside an unknown element can become the item's title), except in the namespaces below.
_HARMLESS_NS_PREFIXES = frozenset(
    {
        "wfw", "slash", "sy", "georss", "gml", "geo", "feedburner", "trackback", "pingback",
        "admin", "cc", "creativeCommons", "taxo", "thr", "ag", "annotate", "blogChannel",
        "icbm", "rdf", "rdfs", "foaf", "l", "ref", "reqv", "search", "ss", "str", "sub",
        "co", "cp", "email", "ev", "fm", "image", "prism", "soap", "szf", "ti", "wiki",
        "xlink", "audio",
    }
)  # fmt: skip
_HARMLESS_HANDLED = frozenset(
    {
        "category", "comments", "source", "keywords", "tags", "rights", "copyright",
        "expirationdate", "created", "dc_subject", "dc_rights", "dc_publisher", "dc_language",
        "dc_contributor", "dcterms_created", "dcterms_valid", "media_keywords",
        "media_rating", "media_category", "media_credit", "media_license",
        "media_restriction", "media_player", "cc_license", "creativeCommons_license",
        "creativecommons_license", "psc_chapters", "psc_chapter", "contributor",
    }
)  # fmt: skip
_fp: tuple[dict[str, str], frozenset[str]] | None = None


def _feedparser_tables() -> tuple[dict[str, str], frozenset[str]]:
    """feedparser's namespace → prefix map and the element names it has handlers for."""
    global _fp
    if _fp is None:
        prefixes = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
        handled = frozenset(
            name.split("_", 2)[2]  # "_start_dc_title" -> "dc_title"
            for name in dir(_FeedParserMixin)
            if name.startswith(("_start_", "_end_"))
        )
        _fp = (prefixes, handled)
    return _fp


def _split_tag(tag: str) -> tuple[str, str]:
    if tag[0] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _skip(el: etree._Element, ns: str, local: str, where: str) -> None:
    """An element the fast path does not read: skip it, or step aside (see above)."""
    prefixes, handled = _feedparser_tables()
    prefix = prefixes.get(ns.lower())
    if prefix is None:  # a namespace feedparser doesn't know: it uses the document's prefix
        prefix = el.prefix or ""
    if prefix in _HARMLESS_NS_PREFIXES:
        return
    if len(el):
        raise _StepAside(f"{where}: skipped element {local!r} has child elements")
    name = f"{prefix}_{local.lower()}" if prefix else local.lower()
    if name in handled and name not in _HARMLESS_HANDLED:
        raise _StepAside(f"{where}: element {name!r} means something to feedparser")


def _text(el: etree._Element) -> str:
    if len(el):
        # Markup inside an element that should hold text: feedparser has rules for that.
        raise _StepAside(f"element {el.tag!r} with child elements where text was expected")
    text: str | None = el.text
    return text or ""


def _date(el: etree._Element) -> datetime | None:
    value = _text(el).strip()
    if not value:
        return None
    dt = _fast_date(value)
    if dt is None:
        dt = parse_date(value)
        if dt is None:
            raise _StepAside(f"unreadable date {value!r}")
    return dt


def _image_of(el: etree._Element, kind: str) -> str | None:
    if kind == "enclosure":
        if (el.get("type") or "").startswith("image/"):
            return el.get("url")  # type: ignore[no-any-return]
        return None
    if kind == "thumbnail":
        return el.get("url")  # type: ignore[no-any-return]
    if el.get("medium") == "image" or (el.get("type") or "").startswith("image/"):
        return el.get("url")  # type: ignore[no-any-return]
    return None


class _Fields(dict[str, Any]):
    """Fields of one element, each allowed once: feedparser's "which one wins" rules for
    repeated elements differ from field to field, so a repeat means stepping aside."""

    def put(self, key: str, value: Any) -> None:
        if key in self:
            raise _StepAside(f"repeated {key}")
        self[key] = value


_RSS_NS = ("", RSS1)


def _rss_entry(item: etree._Element, base: str) -> _RawEntry:
    f = _Fields()
    images: list[str] = []
    guid_el = None
    for child in item:
        ns, local = _split_tag(child.tag)
        if ns in _RSS_NS:
            if local in ("title", "link", "description", "author"):
                f.put(local, _text(child))
            elif local == "guid":
                f.put("guid", _text(child))
                guid_el = child
            elif local == "pubDate":
                f.put("published", _date(child))
            elif local == "enclosure":
                img = _image_of(child, "enclosure")
                if img:
                    images.append(img)
            else:
                _skip(child, ns, local, "item")
        elif ns == DC:
            if local == "title":
                f.put("title", _text(child))
            elif local == "creator":
                f.put("author", _text(child))
            elif local == "description":
                f.put("description", _text(child))
            elif local == "date":
                f.put("updated", _date(child))
            else:
                _skip(child, ns, local, "item")
        elif ns == DCTERMS:
            if local == "issued":
                f.put("published", _date(child))
            elif local == "modified":
                f.put("updated", _date(child))
            else:
                _skip(child, ns, local, "item")
        elif ns == CONTENT and local == "encoded":
            f.put("content", _text(child))
        elif ns in (MEDIA, MEDIA[:-1]) and local in ("thumbnail", "content") and not len(child):
            img = _image_of(child, local)
            if img:
                images.append(img)
        else:
            _skip(child, ns, local, "item")
    guid = f.get("guid")
    link = f.get("link")
    link = link.strip() or None if link is not None else None
    if guid is not None and guid_el is not None and guid_el.get("isPermaLink") != "false":
        # feedparser resolves a permalink guid against the feed's URL ("n1" becomes
        # "https://host/n1") and lets it stand in for a missing link; do the same, or an
        # item would change identity when its feed moves from one parser to the other.
        guid = _resolve(base, guid.strip()) if guid.strip() else guid
        if link is None and guid:
            link = guid
    if guid is None and item.tag == f"{{{RSS1}}}item":
        guid = item.get(f"{{{RDF}}}about")  # feedparser uses rdf:about as RSS 1.0's id
    return _RawEntry(
        guid=guid,
        link=link,
        title=f.get("title"),
        summary=f.get("description"),
        content=f.get("content"),
        author=f.get("author"),
        image=images[0] if images else None,
        published=f.get("published"),
        updated=f.get("updated"),
    )


def _atom_text(el: etree._Element) -> str:
    kind = el.get("type", "text")
    if kind not in ("text", "html", "text/plain", "text/html"):
        raise _StepAside(f"atom content of type {kind!r}")
    return _text(el)


_HTML_TYPES = (None, "text/html", "application/xhtml+xml")


def _atom_link_into(f: _Fields, link: etree._Element, images: list[str]) -> None:
    if not link.get("href") or len(link) or (link.text or "").strip():
        raise _StepAside("atom link without href (feedparser reads its text)")
    rel = link.get("rel", "alternate")
    if rel == "alternate":
        if link.get("type") not in _HTML_TYPES:
            raise _StepAside(f"alternate link of type {link.get('type')!r}")
        f.put("link", link.get("href") or "")
    elif rel == "enclosure" and (link.get("type") or "").startswith("image/") and link.get("href"):
        images.append(link.get("href"))


def _atom_author(el: etree._Element) -> str | None:
    name = email = None
    for child in el:
        ns, local = _split_tag(child.tag)
        if ns == ATOM and local == "name":
            name = _text(child).strip()
        elif ns == ATOM and local == "email":
            email = _text(child).strip()
    if email and not name:
        raise _StepAside("author with an email but no name")
    # feedparser's author string: "Name (email)".
    return f"{name} ({email})" if name and email else name


def _atom_entry(entry: etree._Element, base: str) -> _RawEntry:
    f = _Fields()
    images: list[str] = []
    for child in entry:
        ns, local = _split_tag(child.tag)
        if ns == ATOM:
            if local in ("title", "summary"):
                f.put(local, _atom_text(child))
            elif local == "content":
                if child.get("src"):
                    raise _StepAside("atom content by reference (src=)")
                f.put("content", _atom_text(child))
            elif local == "id":
                f.put("id", _text(child))
            elif local == "link":
                _atom_link_into(f, child, images)
            elif local in ("published", "updated"):
                f.put(local, _date(child))
            elif local == "author":
                f.put("author", _atom_author(child))
            elif local in ("source", "contributor"):
                pass  # feedparser reads these in their own context; none of our fields
            else:
                _skip(child, ns, local, "entry")
        elif ns in (MEDIA, MEDIA[:-1]) and local in ("thumbnail", "content") and not len(child):
            img = _image_of(child, local)
            if img:
                images.append(img)
        else:
            _skip(child, ns, local, "entry")
    guid = f.get("id")
    link = f.get("link") or None
    if guid is not None and guid.strip():
        guid = _resolve(base, guid.strip())  # feedparser treats an Atom id like a guid
        if link is None and guid:
            link = guid
    return _RawEntry(
        guid=guid,
        link=link,
        title=f.get("title"),
        summary=f.get("summary"),
        content=f.get("content"),
        author=f.get("author"),
        image=images[0] if images else None,
        published=f.get("published"),
        updated=f.get("updated"),
    )


_RSS_CHANNEL_IGNORE = frozenset(
    {
        "description", "copyright", "managingEditor", "webMaster", "pubDate", "lastBuildDate",
        "category", "generator", "docs", "cloud", "ttl", "image", "rating", "textInput",
        "textinput", "skipHours", "skipDays", "item", "items",
    }
)  # fmt: skip


def _rss_channel(channel: etree._Element) -> _Fields:
    f = _Fields()
    for child in channel:
        ns, local = _split_tag(child.tag)
        if ns in _RSS_NS:
            if local in ("title", "link", "language"):
                f.put(local, _text(child))
            elif local not in _RSS_CHANNEL_IGNORE:
                _skip(child, ns, local, "channel")
        elif ns == DC and local in ("title", "language"):
            f.put(local, _text(child))
        elif ns == ATOM:
            if local != "link" or child.get("rel") == "alternate":
                raise _StepAside(f"atom:{local} in an RSS channel")
        elif ns != DC:
            _skip(child, ns, local, "channel")
    return f


def _atom_feed(root: etree._Element) -> _Fields:
    f = _Fields()
    for child in root:
        ns, local = _split_tag(child.tag)
        if ns == ATOM:
            if local == "title":
                f.put("title", _atom_text(child))
            elif local == "link":
                _atom_link_into(f, child, [])
            elif local == "id":
                f.put("id", _text(child))
        elif ns != DC:
            _skip(child, ns, local, "feed")
    return f


_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")


def _entity_ref(m: re.Match[bytes]) -> bytes:
    # HTML 4's table, as feedparser uses (HTML5 redefines a few, e.g. &lang;); names outside
    # it stay as they are, so the document still fails and feedparser reads it.
    code = name2codepoint.get(m.group(1).decode("ascii"))
    return m.group(0) if code is None else b"&#%d;" % code


def _fast(body: bytes, url: str, summary_chars: int, note: str | None = None) -> ParsedFeed:
    if body[:1].isspace():
        # Whitespace before <?xml …?> (a common PHP artefact) is the only defect of many
        # Russian feeds; feedparser reads them anyway, with a bozo warning. Same content.
        body = body.lstrip()
    head = body[:2048]
    for marker in _REFUSE_MARKERS:
        if marker in (head if marker.startswith(b"<!") else body):
            raise _StepAside(f"document contains {marker.decode()}")
    if b"<!ENTITY" in body:
        raise _StepAside("entity declarations")
    try:
        root = etree.fromstring(body, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        if "Entity '" not in str(exc) or b"&" not in body:
            raise _StepAside(f"not well-formed: {exc}") from None
        # HTML entities (&nbsp; &laquo; &mdash;) undeclared in XML: the commonest defect of
        # real feeds. feedparser reads them as their characters; so do we, via char refs.
        try:
            root = etree.fromstring(_ENTITY.sub(_entity_ref, body), parser=_xml_parser())
        except etree.XMLSyntaxError as exc2:
            raise _StepAside(f"not well-formed: {exc2}") from None
    if any("itunes.com/dtds" in (u or "").lower() for u in root.nsmap.values()):
        # feedparser reads iTunes feeds case-insensitively (<TiTlE>); podcasts are not ours.
        raise _StepAside("iTunes namespace")
    tag = root.tag
    raws: list[_RawEntry]
    if tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise _StepAside("rss without channel")
        f = _rss_channel(channel)
        items = channel.findall("item")
        if not items:
            items = root.findall("item")  # RSS 0.9x-style items beside the channel
        raws = [_rss_entry(i, url) for i in items]
        lang = f.get("language") or channel.get(XML_LANG) or root.get(XML_LANG)
        title, link = f.get("title"), f.get("link")
    elif tag == f"{{{RDF}}}RDF":
        channel = root.find(f"{{{RSS1}}}channel")
        if channel is None:
            raise _StepAside("RDF without an RSS 1.0 channel")
        f = _rss_channel(channel)
        raws = [_rss_entry(i, url) for i in root.iterfind(f"{{{RSS1}}}item")]
        lang = f.get("language") or channel.get(XML_LANG) or root.get(XML_LANG)
        title, link = f.get("title"), f.get("link")
    elif tag == f"{{{ATOM}}}feed":
        f = _atom_feed(root)
        if root.find(f"{{{ATOM}}}item") is not None:
            raise _StepAside("<item> in an Atom feed")
        raws = [_atom_entry(e, url) for e in root.iterfind(f"{{{ATOM}}}entry")]
        lang = root.get(XML_LANG)
        title, link = f.get("title"), f.get("link")
        if not link and f.get("id"):
            link = _resolve(url, f["id"].strip())  # feedparser: the feed's id stands in
    else:
        raise _StepAside(f"root element {tag!r}")
    return ParsedFeed(
        title=_plain(title) or None,
        link=clean_url(link.strip() if link else None, url),
        language=collapse(lang) if lang and lang.strip() else None,
        entries=[_entry(r, base=url, summary_chars=summary_chars) for r in raws],
        problem=note,
        parser="fast",
    )


# --- feedparser path ----------------------------------------------------------------------


def _fp_date(entry: Mapping[str, Any], key: str) -> datetime | None:
    # dict.get, not entry.get: FeedParserDict maps a missing "updated" to "published".
    st = dict.get(entry, f"{key}_parsed")  # type: ignore[call-overload]
    if st:
        return _struct_to_dt(st)
    value = dict.get(entry, key)  # type: ignore[call-overload]
    return _lenient_date(value) if isinstance(value, str) and value.strip() else None


def _fp_image(entry: Mapping[str, Any]) -> str | None:
    for enc in entry.get("enclosures") or ():
        if (enc.get("type") or "").startswith("image/") and enc.get("href"):
            return str(enc["href"])
    for th in entry.get("media_thumbnail") or ():
        if th.get("url"):
            return str(th["url"])
    for mc in entry.get("media_content") or ():
        if mc.get("url") and (
            mc.get("medium") == "image" or (mc.get("type") or "").startswith("image/")
        ):
            return str(mc["url"])
    return None


def _fp_summary(entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
    summary = entry.get("summary")
    content = None
    for c in entry.get("content") or ():
        if c.get("value"):
            content = c["value"]
            break
    # feedparser copies content into summary when an entry has no summary of its own.
    return (summary or None), content


def _feedparser(body: bytes, url: str, content_type: str | None, summary_chars: int) -> Any:
    # Without a Content-Type feedparser flags every feed as bozo; what it would default to
    # for a feed fetched over HTTP is application/xml.
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    # Our own allowlist (nh3) sanitizes and absolutizes on both paths. feedparser's sanitizer
    # and its relative-URI rewriting of embedded HTML re-serialize the markup (attributes
    # sorted, tags normalized), which would only cost time and make the two paths disagree.
    # Links and ids are still resolved against xml:base by feedparser itself.
    return feedparser.parse(
        body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )


def _from_feedparser(result: Any, url: str, summary_chars: int, note: str | None) -> ParsedFeed:
    feed = result.get("feed", {})
    entries = []
    for e in result.get("entries", []):
        summary, content = _fp_summary(e)
        raw = _RawEntry(
            guid=e.get("id"),
            link=e.get("link"),
            title=e.get("title"),
            summary=summary,
            content=content,
            author=e.get("author"),
            image=_fp_image(e),
            published=_fp_date(e, "published"),
            updated=_fp_date(e, "updated"),
        )
        entries.append(_entry(raw, base=url, summary_chars=summary_chars))
    problems = []
    if note:
        problems.append(note)
    if result.get("bozo"):
        exc = result.get("bozo_exception")
        problems.append(f"{type(exc).__name__}: {exc}" if exc else "feed is not well-formed")
    language = feed.get("language")
    return ParsedFeed(
        title=_plain(feed.get("title")) or None,
        link=clean_url(feed.get("link"), url),
        language=collapse(language) if isinstance(language, str) and language.strip() else None,
        entries=entries,
        problem="; ".join(problems) or None,
        parser="feedparser",
    )


# --- JSON Feed ----------------------------------------------------------------------------


def _json_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # ids are strings by the spec; some feeds write numbers
    return None


def _json_author(item: Mapping[str, Any]) -> str | None:
    authors = item.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return _json_str(authors[0].get("name"))
    author = item.get("author")  # JSON Feed 1.0
    return _json_str(author.get("name")) if isinstance(author, dict) else None


def _json_feed(body: bytes, url: str, summary_chars: int) -> ParsedFeed:
    """JSON Feed 1.0/1.1 (jsonfeed.org), read directly: feedparser 6.0 has no JSON support.

    ``summary`` and ``content_text`` are plain text by the spec (escaped into HTML);
    ``content_html`` is HTML and is sanitized like any feed's.
    """
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FetchError(f"not a feed: invalid JSON ({exc})", url=url, retryable=False) from exc
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise FetchError(
            'JSON without an "items" list where a JSON Feed was expected',
            url=url,
            retryable=False,
        )
    raws = []
    skipped = 0
    for item in items:
        if not isinstance(item, dict):
            skipped += 1
            continue
        summary = _json_str(item.get("summary"))
        text = _json_str(item.get("content_text"))
        raws.append(
            _RawEntry(
                guid=_json_str(item.get("id")),
                link=_json_str(item.get("url")) or _json_str(item.get("external_url")),
                title=html_escape(_json_str(item.get("title")) or ""),
                summary=html_escape(summary) if summary else None,
                content=_json_str(item.get("content_html"))
                or (html_escape(text) if text else None),
                author=_json_author(item),
                image=_json_str(item.get("image")) or _json_str(item.get("banner_image")),
                published=parse_date(_json_str(item.get("date_published"))),
                updated=parse_date(_json_str(item.get("date_modified"))),
            )
        )
    language = _json_str(doc.get("language"))
    return ParsedFeed(
        title=collapse(_json_str(doc.get("title")) or "") or None,
        link=clean_url(_json_str(doc.get("home_page_url")), url),
        language=language.strip() if language and language.strip() else None,
        entries=[_entry(r, base=url, summary_chars=summary_chars) for r in raws],
        problem=f"{skipped} items were not objects and were skipped" if skipped else None,
        parser="json",
    )


# --- the entry point ----------------------------------------------------------------------

#: Set by tests/benchmarks to force one path; None = choose.
FORCE_PARSER: str | None = None


def parse_feed(
    body: bytes,
    *,
    url: str,
    content_type: str | None = None,
    summary_chars: int = 500,
) -> ParsedFeed:
    """Parse feed bytes into cleaned items (see the module doc for which parser runs when).

    Raises ``FetchError(retryable=False)`` when there is nothing readable: an empty body, an
    HTML page, or bytes no parser recognises as a feed. A partly broken feed returns the
    items that could be read, with ``problem`` saying what was wrong. Whatever the path, no
    text comes out with characters that cannot be stored (NUL …) or that hide or reorder what
    readers see in titles and names (bidi controls, zero-width characters): see
    :mod:`newsexchange.textclean`.
    """
    feed = _parse_feed(body, url=url, content_type=content_type, summary_chars=summary_chars)
    return scrub_feed(feed)


def _parse_feed(
    body: bytes,
    *,
    url: str,
    content_type: str | None,
    summary_chars: int,
) -> ParsedFeed:
    if not body or not body.strip():
        raise FetchError("empty response body where a feed was expected", url=url, retryable=False)
    if _HTML_START.match(body[:4096].lstrip(codecs.BOM_UTF8)):
        raise _not_a_feed(body, url, content_type)
    if body.lstrip(codecs.BOM_UTF8)[:64].lstrip().startswith(b"{"):
        return _json_feed(body, url, summary_chars)
    charset = decide_charset(body, content_type)
    if charset.settled and FORCE_PARSER != "feedparser":
        try:
            return _fast(charset.body, url, summary_chars, charset.note)
        except _StepAside:
            pass
        except Exception:  # a fast-path bug must not cost a feed: feedparser reads it
            log.warning(
                "fast path failed; falling back to feedparser", exc_info=True, extra={"url": url}
            )
    if FORCE_PARSER == "fast":
        raise _StepAside("fast path declined")
    note = charset.note
    ctype = charset.content_type if charset.content_type is not None else content_type
    try:
        result = _feedparser(charset.body, url, ctype, summary_chars)
    except Exception:
        # feedparser itself can raise on a garbled charset name (UnicodeDecodeError in its
        # convert_to_utf8). Read the bytes as UTF-8, undecodable ones replaced, and retry.
        text = charset.body.decode("utf-8", "replace")
        try:
            result = _feedparser(
                _to_utf8(text), url, "application/xml; charset=utf-8", summary_chars
            )
        except Exception as retry_exc:
            raise FetchError(
                f"unreadable feed: {type(retry_exc).__name__}: {retry_exc}",
                url=url,
                retryable=False,
            ) from retry_exc
        note = "; ".join(filter(None, [note, "undecodable bytes replaced"]))
    version = result.get("version") or ""
    if not version and not result.get("entries"):
        exc = result.get("bozo_exception")
        why = f" ({type(exc).__name__}: {exc})" if exc else ""
        raise FetchError(
            f"no RSS, Atom or JSON feed found in the response{why}", url=url, retryable=False
        )
    return _from_feedparser(result, url, summary_chars, note)


def parsers() -> dict[str, Callable[..., ParsedFeed]]:
    """The two paths by name, for tests and benchmarks that compare them."""

    def fast(
        body: bytes, *, url: str, content_type: str | None = None, summary_chars: int = 500
    ) -> ParsedFeed:
        charset = decide_charset(body, content_type)
        if not charset.settled:
            raise _StepAside("charset not settled")
        return _fast(charset.body, url, summary_chars, charset.note)

    def reference(
        body: bytes, *, url: str, content_type: str | None = None, summary_chars: int = 500
    ) -> ParsedFeed:
        charset = decide_charset(body, content_type)
        result = _feedparser(
            charset.body,
            url,
            charset.content_type if charset.content_type is not None else content_type,
            summary_chars,
        )
        return _from_feedparser(result, url, summary_chars, charset.note)

    return {"fast": fast, "feedparser": reference}
