"""The fast path: lxml's strict XML parser and a small extractor for RSS 2.0/0.9x, RSS 1.0
(RDF) and Atom 1.0. It answers only when it can vouch for giving feedparser's answer, and
steps aside (:class:`StepAside`) otherwise (see :mod:`newsexchange.ingest.parse`)."""

from __future__ import annotations

import re
import threading
from datetime import datetime
from html.entities import name2codepoint
from typing import Any
from urllib.parse import urljoin

from feedparser.mixin import _FeedParserMixin
from lxml import etree  # type: ignore[import-untyped]

from newsexchange.ingest.clean import clean_url, collapse
from newsexchange.ingest.dates import fast_date, parse_date
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.parsers.entry import RawEntry, build_entry, plain

# --- fast path ----------------------------------------------------------------------------

ATOM = "http://www.w3.org/2005/Atom"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS1 = "http://purl.org/rss/1.0/"
DC = "http://purl.org/dc/elements/1.1/"
DCTERMS = "http://purl.org/dc/terms/"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
MEDIA = "http://search.yahoo.com/mrss/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class StepAside(Exception):
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


def resolve(base: str, uri: str) -> str:
    """feedparser's ``_urljoin``: join, after collapsing extra slashes after the scheme."""
    if uri.startswith(("tag:", "urn:")) and uri[4:6] != "//":
        # Atom's usual ids. The fixer leaves them alone (no "://") and urljoin returns a URL
        # whose scheme differs from the base's, or is not a relative-capable one, as it is.
        return uri
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


#: Tag → (namespace, local name): a feed repeats a dozen tags thousands of times.
_TAG_PARTS: dict[str, tuple[str, str]] = {}


def _split_tag(tag: str) -> tuple[str, str]:
    parts = _TAG_PARTS.get(tag)
    if parts is None:
        if tag[0] == "{":
            ns, _, local = tag[1:].partition("}")
            parts = (ns, local)
        else:
            parts = ("", tag)
        if len(_TAG_PARTS) < 4096:  # bounded: tags come from outside
            _TAG_PARTS[tag] = parts
    return parts


def _skip(el: etree._Element, ns: str, local: str, where: str) -> None:
    """An element the fast path does not read: skip it, or step aside (see above)."""
    prefixes, handled = _feedparser_tables()
    prefix = prefixes.get(ns.lower())
    if prefix is None:  # a namespace feedparser doesn't know: it uses the document's prefix
        prefix = el.prefix or ""
    if prefix in _HARMLESS_NS_PREFIXES:
        return
    if len(el):
        raise StepAside(f"{where}: skipped element {local!r} has child elements")
    name = f"{prefix}_{local.lower()}" if prefix else local.lower()
    if name in handled and name not in _HARMLESS_HANDLED:
        raise StepAside(f"{where}: element {name!r} means something to feedparser")


def _text(el: etree._Element) -> str:
    if len(el):
        # Markup inside an element that should hold text: feedparser has rules for that.
        raise StepAside(f"element {el.tag!r} with child elements where text was expected")
    text: str | None = el.text
    return text or ""


def _date(el: etree._Element) -> datetime | None:
    value = _text(el).strip()
    if not value:
        return None
    dt = fast_date(value)
    if dt is None:
        dt = parse_date(value)
        if dt is None:
            raise StepAside(f"unreadable date {value!r}")
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
            raise StepAside(f"repeated {key}")
        self[key] = value


_RSS_NS = ("", RSS1)


def _dublin_core_into(f: _Fields, child: etree._Element, ns: str, local: str) -> None:
    """A ``dc:`` or ``dcterms:`` element of an RSS item."""
    if ns == DC:
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
    elif local == "issued":
        f.put("published", _date(child))
    elif local == "modified":
        f.put("updated", _date(child))
    else:
        _skip(child, ns, local, "item")


def _rss_guid_and_link(
    item: etree._Element, f: _Fields, guid_el: etree._Element | None, base: str
) -> tuple[str | None, str | None]:
    guid = f.get("guid")
    link = f.get("link")
    link = link.strip() or None if link is not None else None
    if guid is not None and guid_el is not None and guid_el.get("isPermaLink") != "false":
        # feedparser resolves a permalink guid against the feed's URL ("n1" becomes
        # "https://host/n1") and lets it stand in for a missing link; do the same, or an
        # item would change identity when its feed moves from one parser to the other.
        guid = resolve(base, guid.strip()) if guid.strip() else guid
        if link is None and guid:
            link = guid
    if guid is None and item.tag == f"{{{RSS1}}}item":
        guid = item.get(f"{{{RDF}}}about")  # feedparser uses rdf:about as RSS 1.0's id
    return guid, link


def _rss_entry(item: etree._Element, base: str) -> RawEntry:
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
        elif ns in (DC, DCTERMS):
            _dublin_core_into(f, child, ns, local)
        elif ns == CONTENT and local == "encoded":
            f.put("content", _text(child))
        elif ns in (MEDIA, MEDIA[:-1]) and local in ("thumbnail", "content") and not len(child):
            img = _image_of(child, local)
            if img:
                images.append(img)
        else:
            _skip(child, ns, local, "item")
    guid, link = _rss_guid_and_link(item, f, guid_el, base)
    return RawEntry(
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
        raise StepAside(f"atom content of type {kind!r}")
    return _text(el)


_HTML_TYPES = (None, "text/html", "application/xhtml+xml")


def _atom_link_into(f: _Fields, link: etree._Element, images: list[str]) -> None:
    if not link.get("href") or len(link) or (link.text or "").strip():
        raise StepAside("atom link without href (feedparser reads its text)")
    rel = link.get("rel", "alternate")
    if rel == "alternate":
        if link.get("type") not in _HTML_TYPES:
            raise StepAside(f"alternate link of type {link.get('type')!r}")
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
        raise StepAside("author with an email but no name")
    # feedparser's author string: "Name (email)".
    return f"{name} ({email})" if name and email else name


def _atom_entry(entry: etree._Element, base: str) -> RawEntry:
    f = _Fields()
    images: list[str] = []
    for child in entry:
        ns, local = _split_tag(child.tag)
        if ns == ATOM:
            if local in ("title", "summary"):
                f.put(local, _atom_text(child))
            elif local == "content":
                if child.get("src"):
                    raise StepAside("atom content by reference (src=)")
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
        guid = resolve(base, guid.strip())  # feedparser treats an Atom id like a guid
        if link is None and guid:
            link = guid
    return RawEntry(
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
                raise StepAside(f"atom:{local} in an RSS channel")
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


def _xml_root(body: bytes) -> etree._Element:
    """The parsed document, or StepAside when the fast path cannot vouch for it."""
    if body[:1].isspace():
        # Whitespace before <?xml …?> (a common PHP artefact) is the only defect of many
        # Russian feeds; feedparser reads them anyway, with a bozo warning. Same content.
        body = body.lstrip()
    head = body[:2048]
    for marker in _REFUSE_MARKERS:
        if marker in (head if marker.startswith(b"<!") else body):
            raise StepAside(f"document contains {marker.decode()}")
    if b"<!ENTITY" in body:
        raise StepAside("entity declarations")
    try:
        root = etree.fromstring(body, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        if "Entity '" not in str(exc) or b"&" not in body:
            raise StepAside(f"not well-formed: {exc}") from None
        # HTML entities (&nbsp; &laquo; &mdash;) undeclared in XML: the commonest defect of
        # real feeds. feedparser reads them as their characters; so do we, via char refs.
        try:
            root = etree.fromstring(_ENTITY.sub(_entity_ref, body), parser=_xml_parser())
        except etree.XMLSyntaxError as exc2:
            raise StepAside(f"not well-formed: {exc2}") from None
    if any("itunes.com/dtds" in (u or "").lower() for u in root.nsmap.values()):
        # feedparser reads iTunes feeds case-insensitively (<TiTlE>); podcasts are not ours.
        raise StepAside("iTunes namespace")
    return root


def parse_fast(body: bytes, url: str, summary_chars: int, note: str | None = None) -> ParsedFeed:
    """RSS 2.0/0.9x, RSS 1.0 (RDF) or Atom 1.0 → the feed; StepAside for anything else."""
    root = _xml_root(body)
    tag = root.tag
    raws: list[RawEntry]
    if tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise StepAside("rss without channel")
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
            raise StepAside("RDF without an RSS 1.0 channel")
        f = _rss_channel(channel)
        raws = [_rss_entry(i, url) for i in root.iterfind(f"{{{RSS1}}}item")]
        lang = f.get("language") or channel.get(XML_LANG) or root.get(XML_LANG)
        title, link = f.get("title"), f.get("link")
    elif tag == f"{{{ATOM}}}feed":
        f = _atom_feed(root)
        if root.find(f"{{{ATOM}}}item") is not None:
            raise StepAside("<item> in an Atom feed")
        raws = [_atom_entry(e, url) for e in root.iterfind(f"{{{ATOM}}}entry")]
        lang = root.get(XML_LANG)
        title, link = f.get("title"), f.get("link")
        if not link and f.get("id"):
            link = resolve(url, f["id"].strip())  # feedparser: the feed's id stands in
    else:
        raise StepAside(f"root element {tag!r}")
    return ParsedFeed(
        title=plain(title) or None,
        link=clean_url(link.strip() if link else None, url),
        language=collapse(lang) if lang and lang.strip() else None,
        entries=[build_entry(r, base=url, summary_chars=summary_chars) for r in raws],
        problem=note,
        parser="fast",
    )
