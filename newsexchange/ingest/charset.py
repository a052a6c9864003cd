"""The charset of feed bytes: HTTP header, XML declaration, BOM, or a guess (Cyrillic
single-byte codecs first, then charset_normalizer), and whether the fast path may trust it
(:func:`decide_charset`)."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes as _from_bytes

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
class Charset:
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
    best = _from_bytes(body[:65536]).best()
    return _codec(best.encoding) if best else None


def to_utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if _XML_DECL_ANY.match(data):
        data = _XML_DECL_ANY.sub(b'<?xml version="1.0" encoding="utf-8"?>', data, count=1)
    return data


def _utf8_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip()
    return f"{media}; charset=utf-8"


def decide_charset(body: bytes, content_type: str | None) -> Charset:
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
        return Charset(body, False, None, content_type=content_type)
    else:
        bom = None
    m = _CHARSET_PARAM.search(content_type or "")
    http = _codec(m.group(1)) if m else None
    if m and http is None:
        return Charset(body, False, None, content_type=content_type)  # unknown charset name
    dm = _XML_DECL.match(body[:512])
    declared = _codec(dm.group(1)) if dm else None
    if dm and declared is None:
        return Charset(body, False, None, content_type=content_type)
    if bom and ((http and http != "utf-8") or (declared and declared != "utf-8")):
        return Charset(body, False, None, content_type=content_type)
    note = None
    if http and declared and http != declared and not {http, declared} <= {"utf-8", "ascii"}:
        if "utf-8" not in (http, declared):
            return Charset(body, False, None, content_type=content_type)
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
        return _undeclared(body, content_type)
    return _declared(body, encoding, note, content_type)


def _undeclared(body: bytes, content_type: str | None) -> Charset:
    """No BOM, no HTTP charset, no declaration: UTF-8 when the bytes are, else a guess."""
    if body.isascii():
        return Charset(body, True, "utf-8", content_type=_utf8_content_type(content_type))
    try:
        body.decode("utf-8")
        return Charset(body, True, "utf-8", content_type=_utf8_content_type(content_type))
    except UnicodeDecodeError:
        pass
    detected = _detect(body)
    if detected is None:
        return Charset(body, False, None, content_type=content_type)
    try:
        text = body.decode(detected)
    except UnicodeDecodeError:
        return Charset(body, False, None, content_type=content_type)
    # Detected, so feedparser must not second-guess it: it gets UTF-8 bytes too, but the
    # fast path does not vouch for a guessed charset's edge cases.
    return Charset(
        to_utf8(text),
        False,
        detected,
        note=f"no charset declared; detected {detected}",
        content_type=_utf8_content_type(content_type),
    )


def _declared(body: bytes, encoding: str, note: str | None, content_type: str | None) -> Charset:
    """The bytes in the one ``encoding`` BOM, HTTP and declaration settled on."""
    if encoding not in _FAST_CODECS:
        return Charset(body, False, encoding, content_type=content_type)
    utf8_ct = _utf8_content_type(content_type) or (note and "application/xml; charset=utf-8")
    if encoding in ("utf-8", "ascii") and body.isascii():
        return Charset(body, True, encoding, note, utf8_ct)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        return Charset(body, False, encoding, content_type=content_type)
    if encoding == "utf-8" and not note:
        return Charset(body, True, encoding, note, utf8_ct)
    return Charset(to_utf8(text), True, encoding, note, utf8_ct)
