"""Feed bytes → :class:`ParsedFeed`: charset, parser choice, cleaning, UTC dates.

Two parsers, one answer (docs/parsing.md has the rules in full and the figures):

* **fast path** (``parser="fast"``, :mod:`.parsers.fast`): lxml's strict XML parser plus a small extractor for RSS
  2.0/0.9x, RSS 1.0 (RDF) and Atom 1.0, ~8× faster than feedparser with cleaning included.
  It only answers when it can vouch for giving feedparser's answer: the charset is settled,
  the document is well-formed (HTML 4 entities such as ``&laquo;`` and whitespace before
  ``<?xml`` are tolerated, as feedparser tolerates them), has no DTD/entity declarations,
  ``xml:base``, XHTML content or repeated fields, and every element it skips is one
  feedparser has no handler for. Anything else makes it step aside (:class:`StepAside`).
* **feedparser** (``parser="feedparser"``, :mod:`.parsers.reference`): the reference, for everything the fast path
  declines: ill-formed XML (it recovers the readable items and says what was wrong), Atom
  0.3, CDF, exotic charsets, charset conflicts between HTTP and the XML declaration.
* **JSON Feed** (``parser="json"``, :mod:`.parsers.jsonfeed`), read directly: feedparser 6.0 has no JSON support.

All paths end in the same builder (:func:`.parsers.entry.build_entry`), so cleaning, link,
guid and date rules are the same whichever parser read the bytes (the charset is settled by
:mod:`.charset`, dates read by :mod:`.dates`); tests/test_corpus.py checks that the fast path and
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
import logging
import re
from collections.abc import Callable

from newsexchange.errors import FetchError
from newsexchange.ingest.charset import Charset, decide_charset, to_utf8
from newsexchange.ingest.clean import clean_url, scrub_feed
from newsexchange.ingest.dates import fast_date
from newsexchange.ingest.dates import parse_date as parse_date
from newsexchange.ingest.model import ParsedFeed
from newsexchange.ingest.parsers.entry import SUMMARY_HTML_MAX_CHARS as SUMMARY_HTML_MAX_CHARS
from newsexchange.ingest.parsers.fast import StepAside, parse_fast
from newsexchange.ingest.parsers.jsonfeed import parse_json_feed
from newsexchange.ingest.parsers.reference import from_feedparser, run_feedparser

log = logging.getLogger(__name__)

#: tests/test_parse.py checks the fast date reader against feedparser's through this name.
_fast_date = fast_date

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
        return parse_json_feed(body, url, summary_chars)
    charset = decide_charset(body, content_type)
    if charset.settled and FORCE_PARSER != "feedparser":
        try:
            return parse_fast(charset.body, url, summary_chars, charset.note)
        except StepAside:
            pass
        except Exception:  # a fast-path bug must not cost a feed: feedparser reads it
            log.warning(
                "fast path failed; falling back to feedparser", exc_info=True, extra={"url": url}
            )
    if FORCE_PARSER == "fast":
        raise StepAside("fast path declined")
    return _by_feedparser(charset, url, content_type, summary_chars)


def _by_feedparser(
    charset: Charset, url: str, content_type: str | None, summary_chars: int
) -> ParsedFeed:
    """The reference path, for whatever the fast path declined."""
    note = charset.note
    ctype = charset.content_type if charset.content_type is not None else content_type
    try:
        result = run_feedparser(charset.body, url, ctype, summary_chars)
    except Exception:
        # feedparser itself can raise on a garbled charset name (UnicodeDecodeError in its
        # convert_to_utf8). Read the bytes as UTF-8, undecodable ones replaced, and retry.
        text = charset.body.decode("utf-8", "replace")
        try:
            result = run_feedparser(
                to_utf8(text), url, "application/xml; charset=utf-8", summary_chars
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
    return from_feedparser(result, url, summary_chars, note)


def parsers() -> dict[str, Callable[..., ParsedFeed]]:
    """The two paths by name, for tests and benchmarks that compare them."""

    def fast(
        body: bytes, *, url: str, content_type: str | None = None, summary_chars: int = 500
    ) -> ParsedFeed:
        charset = decide_charset(body, content_type)
        if not charset.settled:
            raise StepAside("charset not settled")
        return parse_fast(charset.body, url, summary_chars, charset.note)

    def reference(
        body: bytes, *, url: str, content_type: str | None = None, summary_chars: int = 500
    ) -> ParsedFeed:
        charset = decide_charset(body, content_type)
        result = run_feedparser(
            charset.body,
            url,
            charset.content_type if charset.content_type is not None else content_type,
            summary_chars,
        )
        return from_feedparser(result, url, summary_chars, charset.note)

    return {"fast": fast, "feedparser": reference}
