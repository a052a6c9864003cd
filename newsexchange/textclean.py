"""Characters that must never be stored or shown: pure functions over strings, for every step.

Two kinds (issue 10, "bad data never counts as good"):

* **Unstorable**: U+0000, the C0 controls other than tab, line feed and carriage return,
  U+FFFE/U+FFFF and lone surrogates. PostgreSQL refuses NUL in text ("invalid byte sequence
  for encoding UTF8: 0x00"), XML 1.0 cannot hold any of them, and a lone surrogate cannot be
  encoded as UTF-8 at all; one such character in one item failed a whole feed on PostgreSQL,
  every fetch. They carry no meaning in news text, so they are removed (not replaced).
* **Invisible**: the Unicode ``Bidi_Control`` characters (U+061C, U+200E/U+200F,
  U+202A–U+202E embeddings and overrides, U+2066–U+2069 isolates), zero-width characters
  (U+200B–U+200D, U+2060, U+FEFF) and the other invisible format characters of
  U+2061–U+206F. In a title or a name they reorder or hide what an editor or a journalist
  reads ("‮gpj.exe" reads as "exe.jpg"), in the digest, a mail subject or a display name.

Names and titles lose both kinds (:func:`clean_name`); running text (summaries) loses the
unstorable characters and the embeddings, overrides and isolates, whose effect runs past the
end of the text into whatever is printed after it (:func:`clean_text`); the single-character
marks (U+200E/U+200F) and zero-width characters are kept there, where they still do their job
(a zero-width space marks a line-break opportunity, ZWNJ is spelling in some scripts).

Kept in this neutral module, not in ``ingest``, so that every step that stores or prints
data from outside (feed titles, item titles and authors, contact names from CSV) uses the
same rules.
"""

from __future__ import annotations

import re

_UNSTORABLE = "\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff"
_EMBEDDINGS = "\u202a-\u202e\u2066-\u2069"
_INVISIBLE = "\u061c\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff"

UNSTORABLE = re.compile(f"[{_UNSTORABLE}]")
TEXT_BAD = re.compile(f"[{_UNSTORABLE}{_EMBEDDINGS}]")
NAME_BAD = re.compile(f"[{_UNSTORABLE}{_INVISIBLE}]")


def strip_unstorable(text: str) -> str:
    """``text`` without the characters PostgreSQL or XML cannot hold (see the module doc)."""
    return UNSTORABLE.sub("", text) if UNSTORABLE.search(text) else text


def clean_text(text: str) -> str:
    """Running text (a summary, plain or HTML) as it may be stored: unstorable characters
    and bidirectional embeddings, overrides and isolates removed. Nothing else changes."""
    return TEXT_BAD.sub("", text) if TEXT_BAD.search(text) else text


def clean_name(text: str) -> str:
    """A title or a name as it may be stored and shown: unstorable and invisible characters
    (bidi controls, zero-width characters) removed, whitespace (tabs and line breaks
    included) collapsed to single spaces, trimmed."""
    if NAME_BAD.search(text):
        text = NAME_BAD.sub("", text)
    return " ".join(text.split())


def is_clean_name(text: str) -> bool:
    """Whether :func:`clean_name` would leave ``text`` unchanged."""
    return NAME_BAD.search(text) is None and " ".join(text.split()) == text
