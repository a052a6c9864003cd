"""Cleaning untrusted feed content: safe HTML, plain text, clean URLs.

Everything here is a pure function over strings and runs on the feed hot path, so it avoids
BeautifulSoup (about 1 ms per summary) in favour of nh3 (ammonia, in Rust: tens of µs) and
a few regular expressions. Safety comes from nh3's allowlist alone; the regular expressions
only ever *remove* things before nh3 sees them (tracking pixels), so a regex that misses a
case cannot let anything dangerous through.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import replace
from functools import lru_cache
from typing import Literal
from urllib.parse import urljoin, urlsplit

import nh3

from newsexchange.ingest.model import ParsedEntry, ParsedFeed
from newsexchange.textclean import NAME_BAD, TEXT_BAD, UNSTORABLE, clean_name, clean_text

# --- URLs ---------------------------------------------------------------------------------

#: Query parameters that only identify a campaign or a click, never the page itself.
TRACKING_PARAMS: frozenset[str] = frozenset(
    {
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "yclid",  # Yandex.Direct
        "ysclid",  # Yandex search click
        "_openstat",  # Yandex / Russian ad networks
        "mc_cid",
        "mc_eid",  # Mailchimp
        "msclkid",
        "igshid",
        "twclid",
        "ttclid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "vero_id",
        "oly_anon_id",
        "oly_enc_id",
        "rb_clickid",
        "s_cid",
        "ref_src",
        "spm",
        "from_rss",
    }
)
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_", "hmb_", "ga_")

#: Hosts that serve tracking pixels / web beacons; images from them are dropped.
TRACKER_HOSTS: frozenset[str] = frozenset(
    {
        "feeds.feedburner.com",
        "feedproxy.google.com",
        "pixel.wp.com",
        "stats.wordpress.com",
        "www.google-analytics.com",
        "google-analytics.com",
        "mc.yandex.ru",
        "counter.yadro.ru",
        "top-fwz1.mail.ru",
        "top.mail.ru",
        "pixel.quantserve.com",
        "sb.scorecardresearch.com",
        "b.scorecardresearch.com",
        "www.facebook.com/tr",
        "pixel.facebook.com",
        "certify.alexametrics.com",
        "feeds.wordpress.com",
        "vk.com/rtrg",
        "counter.rambler.ru",
        "tns-counter.ru",
        "www.tns-counter.ru",
        "track.adform.net",
    }
)

_TRACKER_HOST_NAMES = frozenset(h.split("/")[0] for h in TRACKER_HOSTS)
_SAFE_SCHEMES = ("http", "https")
# Characters browsers ignore inside a scheme ("java\tscript:"), so they must not hide one.
_URL_JUNK = re.compile(r"[\x00-\x20\x7f]+")


def _is_tracking_param(name: str) -> bool:
    low = name.lower()
    return low in TRACKING_PARAMS or low.startswith(TRACKING_PREFIXES)


_TRACKING_NAMES = (
    r"(?:utm_|pk_|mtm_|hmb_|ga_|xtor=|fbclid|gclid|gclsrc|dclid|gbraid|wbraid|yclid|ysclid|"
    r"_openstat|mc_cid|mc_eid|msclkid|igshid|twclid|ttclid|_hsenc|_hsmi|mkt_tok|vero_id|oly_|"
    r"rb_clickid|s_cid|ref_src|spm|from_rss)"
)
# A cheap test that a URL may carry a tracking parameter; only then is the query parsed.
_TRACKING_HINT = re.compile(r"[?&#;]" + _TRACKING_NAMES, re.IGNORECASE)
_ABS_HTTP = re.compile(r"^https?://[^/?#@\\]+(?:[/?#]|$)", re.IGNORECASE)


def strip_tracking(url: str) -> str:
    """Remove tracking query parameters (utm_*, fbclid …) and tracking fragments (#xtor=…).

    The kept parameters are left byte for byte as they were (no re-encoding), so a URL
    without tracking comes back unchanged and two spellings of one page stay comparable.
    """
    if not _TRACKING_HINT.search(url):
        return url
    head, _, fragment = url.partition("#")
    path, _, query = head.partition("?")
    if query:
        kept = [p for p in query.split("&") if p and not _is_tracking_param(p.split("=", 1)[0])]
        query = "&".join(kept)
    if fragment and (fragment.startswith(("xtor=", "utm_")) or "utm_" in fragment):
        fragment = ""
    return path + ("?" + query if query else "") + ("#" + fragment if fragment else "")


def clean_url(url: str | None, base: str | None) -> str | None:
    """An absolute http(s) URL with tracking parameters stripped, or None.

    Relative URLs are resolved against ``base``; anything that ends up with another scheme
    (``javascript:``, ``data:``, ``mailto:`` …) or no host is refused, because the result is
    used as an item's link and shown to readers as one.
    """
    if not url:
        return None
    url = url.strip()
    if _URL_JUNK.search(url):
        url = _URL_JUNK.sub("", url)
    if not url:
        return None
    if _ABS_HTTP.match(url):  # the common case: already absolute, plainly http(s)
        return strip_tracking(url)
    if not url.lower().startswith(("http://", "https://")):
        if base is None:
            return None
        base = base.strip()
        if not base.lower().startswith(("http://", "https://")):
            return None
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in _SAFE_SCHEMES or not host:
        return None
    return strip_tracking(url)


_HOST_PATH = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^@/?#]*@)?([^/:?#]+)(?::\d*)?(/[^/?#]*)?", re.I)


def _is_tracker(url: str) -> bool:
    m = _HOST_PATH.match(url)
    if m is None:
        return False
    host = m.group(1).lower()
    return host in TRACKER_HOSTS or f"{host}{m.group(2) or ''}" in TRACKER_HOSTS


# --- HTML ---------------------------------------------------------------------------------

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "dl",
        "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
        "img", "ins", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strong",
        "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title", "hreflang"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
    # No "cite": ammonia does not check its URL scheme, and readers never see it.
    "del": {"datetime"},
    "ins": {"datetime"},
    "time": {"datetime"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
}
# Tags whose *content* goes too: code, styling, forms and media players are never text a
# reader should see. (iframe/object/embed lose the element but keep their fallback text,
# which is written for readers, as feedparser does.)
DROP_CONTENT_TAGS: frozenset[str] = frozenset(
    {
        "script", "style", "noscript", "template", "frameset", "form", "select", "textarea",
        "button", "svg", "math", "title", "head", "audio", "video", "canvas",
    }
)  # fmt: skip


@lru_cache(maxsize=512)
def _cleaner(base_url: str | None) -> nh3.Cleaner:
    """The allowlist cleaner resolving relative URLs against ``base_url``.

    ammonia does the resolving (``url_relative``) in Rust; a Python ``attribute_filter``
    would cost ~25 µs per attribute. Building a cleaner costs ~50 µs, so there is one per
    base URL, cached (one per feed in practice: items resolve against the feed's URL, as
    feedparser does).
    """
    relative: Literal["deny"] | tuple[Literal["rewrite_with_base"], str] = "deny"
    if base_url and base_url.lower().startswith(("http://", "https://")):
        relative = ("rewrite_with_base", base_url)
    try:
        return nh3.Cleaner(
            tags=set(ALLOWED_TAGS),
            clean_content_tags=set(DROP_CONTENT_TAGS),
            attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
            strip_comments=True,
            link_rel="noopener noreferrer",
            # Only http(s), in links and images alike (issue 10: "only http(s) links are
            # kept"): a mailto: link is readable as its text, which stays.
            url_schemes=set(_SAFE_SCHEMES),
            url_relative=relative,
        )
    except ValueError:  # a base URL ammonia cannot parse: relative URLs are dropped
        return _cleaner(None)


# Post-passes over ammonia's output, which is normalized (lower-case tags, attributes as
# name="value" with &amp;/&quot; escaped), so these patterns see every case there is.
_IMG_OUT = re.compile(r"<img\b[^>]*>")
_DIM_OUT = re.compile(r'\b(?:width|height)="\s*[01](?:px)?\s*"')
_SRC_OUT = re.compile(r'\ssrc="([^"]*)"')
_EMPTY_LINK = re.compile(r'<a rel="noopener noreferrer">(.*?)</a>', re.S)
_URL_ATTR_OUT = re.compile(r'(\s(?:href|src)=")([^"]*)"')


_IMG_HOST = re.compile(r'<img src="https?://([^/:"?#]+)')


def _may_track(out: str) -> bool:
    """Cheap test before the image pass: a 0/1 dimension, an image whose URL was refused,
    or an image from a tracker host."""
    if '="0' in out or '="1"' in out or '="1px"' in out or "<img>" in out:
        return True
    if out.count("<img") != out.count('<img src="'):
        return True
    return any(
        h.lower() in TRACKER_HOSTS or h.lower() in _TRACKER_HOST_NAMES
        for h in _IMG_HOST.findall(out)
    )


def _drop_tracking_img(match: re.Match[str]) -> str:
    tag = match.group(0)
    if _DIM_OUT.search(tag):
        return ""  # 1x1 / 0x0: a web beacon, not a picture
    src = _SRC_OUT.search(tag)
    if src is None:
        return ""  # its URL was refused (javascript:, data: …): nothing left to show
    if _is_tracker(_html.unescape(src.group(1))):
        return ""
    return tag


def _untrack(match: re.Match[str]) -> str:
    """strip_tracking on an attribute value as ammonia writes it (``&`` as ``&amp;``),
    without unescaping and re-escaping it."""
    value = match.group(2)
    if not _TRACKING_HINT.search(value):
        return match.group(0)
    head, _, fragment = value.partition("#")
    path, _, query = head.partition("?")
    if query:
        kept = [p for p in query.split("&amp;") if p and not _is_tracking_param(p.split("=", 1)[0])]
        query = "&amp;".join(kept)
    if fragment and (fragment.startswith(("xtor=", "utm_")) or "utm_" in fragment):
        fragment = ""
    url = path + ("?" + query if query else "") + ("#" + fragment if fragment else "")
    return f'{match.group(1)}{url}"'


def sanitize_html(html: str, base_url: str | None) -> str:
    """Safe HTML from untrusted feed HTML: an allowlist of tags and attributes (nh3).

    Removed: scripts, styles, event handlers, forms, iframes and other embeds (with their
    content), ``javascript:``/``data:`` and other non-http(s) URLs, comments, 1×1 and 0×0
    images and images from known tracker hosts. Links and images are made absolute against
    ``base_url`` (the feed's or item's URL; relative URLs are dropped without one), stripped
    of tracking query parameters, and links get ``rel="noopener noreferrer"``.
    """
    if not html:
        return ""
    if UNSTORABLE.search(html):  # a lone surrogate cannot even be handed to nh3 (Rust)
        html = UNSTORABLE.sub("", html)
    return sanitize_storable_html(html, base_url)


def sanitize_storable_html(html: str, base_url: str | None) -> str:
    """:func:`sanitize_html` for HTML already without unstorable characters (the entry
    builder removed them from every field at once): the same result, one scan fewer."""
    if "<" not in html and "&" not in html:
        return html.strip()
    out = _cleaner(base_url).clean(html)
    # Each post-pass runs only when a cheap test says it may have work.
    if "<img" in out and _may_track(out):
        out = _IMG_OUT.sub(_drop_tracking_img, out)
    if '<a rel="noopener noreferrer">' in out:
        out = _EMPTY_LINK.sub(r"\1", out)  # a link whose URL was refused is just text
    if _TRACKING_HINT.search(out):
        out = _URL_ATTR_OUT.sub(_untrack, out)
    return out.strip()


# --- plain text ---------------------------------------------------------------------------

_TEXT_CLEANER = nh3.Cleaner(
    tags=set(),
    clean_content_tags=set(DROP_CONTENT_TAGS),
    attributes={},
    strip_comments=True,
    link_rel=None,
)
# Block-level boundaries become spaces, or "<p>a</p><p>b</p>" would read "ab".
_BLOCK_BOUNDARY = re.compile(
    r"<(?=/?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|table|blockquote|pre|dd|dt|dl|hr|figure"
    r"|figcaption|section|article|header|footer|aside|img)\b)",
    re.IGNORECASE,
)
#: The same boundaries in sanitized HTML, where every "<" opens a tag (text has "&lt;") and
#: every tag name is lower case (ammonia writes them so): no case folding needed.
_SAFE_BLOCK_BOUNDARY = re.compile(_BLOCK_BOUNDARY.pattern)
_TAG_OUT = re.compile(r"<[^>]*>")
_WS = re.compile(r"\s+")


def text_of_safe_html(safe_html: str, limit: int) -> str:
    """:func:`to_text` for HTML that already came out of :func:`sanitize_html`.

    Sanitized HTML is normalized (every ``<`` in text is ``&lt;``, no script/style content),
    so dropping tags is a plain regex: ~10 µs instead of a second HTML parse.
    """
    if "<" in safe_html:
        safe_html = _TAG_OUT.sub("", _SAFE_BLOCK_BOUNDARY.sub(" <", safe_html))
    text = _html.unescape(safe_html) if "&" in safe_html else safe_html
    return truncate(" ".join(text.split()), limit)


def to_text(html: str, limit: int) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed,
    and cut to at most ``limit`` characters at a word boundary (ending with "…")."""
    if not html:
        return ""
    if UNSTORABLE.search(html):
        html = UNSTORABLE.sub("", html)
    if "<" in html:
        html = _BLOCK_BOUNDARY.sub(" <", html)
        text = _html.unescape(_TEXT_CLEANER.clean(html))
    elif "&" in html:
        text = _html.unescape(html)
    else:
        text = html
    text = _WS.sub(" ", text).strip()
    return truncate(text, limit)


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters at a word boundary, ending with "…"."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a word boundary not too far back; else cut mid-word
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


def collapse(text: str) -> str:
    """Whitespace collapsed to single spaces, trimmed."""
    return " ".join(text.split())


# --- characters that must never be stored -------------------------------------------------


def _name(value: str) -> str:
    return clean_name(value) if NAME_BAD.search(value) else value


def _opt_name(value: str | None) -> str | None:
    return (clean_name(value) or None) if value and NAME_BAD.search(value) else value


def _opt_url(value: str | None) -> str | None:
    # After clean_url: removing characters past the "http(s)://" it checked keeps the scheme.
    return (clean_name(value) or None) if value and NAME_BAD.search(value) else value


def scrub_entry(e: ParsedEntry) -> ParsedEntry:
    """The entry without characters storage or readers must never get (newsexchange.textclean):
    titles, authors, links and ids lose unstorable and invisible characters, summaries lose
    unstorable characters and bidi embeddings/overrides/isolates. The same object when there
    was nothing to remove (the common case: one regex search over all fields, ~1 µs)."""
    joined = "\x1f".join(
        (e.title, e.summary_html, e.summary_text, e.author or "", e.guid or "", e.link or "")
        + ((e.image_url,) if e.image_url else ())
    )
    if not NAME_BAD.search(joined):  # NAME_BAD: every character removed from any field
        return e
    title = _name(e.title)
    author = _opt_name(e.author)
    guid = _opt_name(e.guid)
    link = _opt_url(e.link)
    image = _opt_url(e.image_url)
    html = clean_text(e.summary_html) if TEXT_BAD.search(e.summary_html) else e.summary_html
    text = e.summary_text
    if TEXT_BAD.search(text):
        text = collapse(clean_text(text))  # a removed character may leave a space at an end
    if (
        title is e.title
        and author is e.author
        and guid is e.guid
        and link is e.link
        and image is e.image_url
        and html is e.summary_html
        and text is e.summary_text
    ):
        return e
    return replace(
        e,
        title=title,
        author=author,
        guid=guid,
        link=link,
        image_url=image,
        summary_html=html,
        summary_text=text,
    )


def scrub_feed(feed: ParsedFeed) -> ParsedFeed:
    """:func:`scrub_entry` on every entry, and the feed's title, link and language."""
    entries = [scrub_entry(e) for e in feed.entries]
    title, link, language = _opt_name(feed.title), _opt_url(feed.link), _opt_name(feed.language)
    problem = _opt_name(feed.problem)
    if (
        all(a is b for a, b in zip(entries, feed.entries, strict=True))
        and title is feed.title
        and link is feed.link
        and language is feed.language
        and problem is feed.problem
    ):
        return feed
    return replace(
        feed, entries=entries, title=title, link=link, language=language, problem=problem
    )
