"""Header values built from data: one cleaning step before anything is encoded.

A contact name, a feed or item title, an exchange or list name can hold a CR or LF (a CSV
cell in quotes may span lines; a feed title is whatever the feed says). In a header that is
not text but structure: ``Anna\\r\\nBcc: evil@x.example`` as a display name became a
separate ``Bcc:`` header in delivered mail, because the fast per-recipient path writes the
``To:`` line as bytes. The email package refuses such values instead (``ValueError``), which
turned one bad name or title into a failed digest.

So every header built from data goes through :func:`header_text`: each run of control
characters (Unicode category Cc: C0, DEL, C1 — CR, LF, TAB, NUL, NEL among them) and the
Unicode line and paragraph separators (U+2028, U+2029, which ``str.splitlines`` and so the
email package also treat as line breaks) becomes one space. Addresses are then built with
:func:`mailbox` (``email.utils.formataddr`` over the cleaned display name).
"""

from __future__ import annotations

import base64
import re
from email.policy import SMTP, EmailPolicy
from email.utils import formataddr
from typing import Any

# Cc is exactly U+0000–U+001F and U+007F–U+009F; the spaces around a run are folded into the
# one space that replaces it, so "Anna \r\n Bcc" reads "Anna Bcc".
_BREAKS = re.compile("[ ]*[\x00-\x1f\x7f-\x9f\u2028\u2029]+[ ]*")


def header_text(value: object) -> str:
    """``value`` as text safe for one header field: control characters and line/paragraph
    separators replaced by a space, leading and trailing spaces removed."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if _BREAKS.search(text) is None:
        return text.strip(" ")
    return _BREAKS.sub(" ", text).strip(" ")


def mailbox(name: str | None, addr: str) -> str:
    """``Name <addr>`` with the display name cleaned (RFC 2047-encoded when not ASCII), or
    the bare address when there is no name left."""
    clean_name = header_text(name)
    clean_addr = header_text(addr).replace(" ", "")
    if not clean_name:
        return clean_addr
    if clean_name.isascii():
        return formataddr((clean_name, clean_addr))
    return f"{encode_display_name(clean_name)} <{clean_addr}>"


# -- encoding: every decoder gets the same text back -------------------------------------------
#
# Why our own folding: Python 3.11's folder (email._header_value_parser._refold_parse_tree)
# puts the space at a fold point *between* two encoded-words, where RFC 2047 §6.2 decoders
# drop it ("Новости Йоэнсууи Северной Карелии"), and leaves a trailing space before a fold
# that unfolds into two ("uutiset:  1.–15."). And Python's own address parser (policy.default,
# 3.11–3.13) keeps the whitespace between adjacent encoded-words in a display name, which
# compat32 and other parsers drop, so no split of a display name reads the same everywhere.
#
# So: in unstructured text (Subject, List-Id) ASCII words stay as they are, each run of words
# with non-ASCII becomes encoded-words that carry their own spaces, and folds fall only where
# decoders agree (between encoded-words, or at a literal space between plain words). A display
# name with non-ASCII is one encoded-word (RFC 2047 limits a word to 75 characters; a longer
# name still gets one word, on a line far below RFC 5322's 998, because every decoder tested
# reads that back and none reads a split name back the same).

_WORD_MAX = 75
_LINE_MAX = 78
_TOKENS = re.compile(r"\S+|\s+")
_ATOM_TEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]+$")
TEXT_HEADERS = frozenset({"subject", "list-id", "comments", "x-digest-title"})
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to", "sender"})


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _b64_words(text: str, first_room: int) -> list[str]:
    """``text`` as encoded-words of at most 75 characters, the first of at most
    ``first_room``; never splitting a character (each word decodes on its own)."""
    words: list[str] = []
    chunk = ""
    room = max(first_room, 20)
    for ch in text:
        if len(_b64_word(chunk + ch)) > room and chunk:
            words.append(_b64_word(chunk))
            chunk = ""
            room = _WORD_MAX
        chunk += ch
    if chunk:
        words.append(_b64_word(chunk))
    return words


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word or not word.isprintable()


def _runs(value: str) -> list[list[Any]]:
    """``value`` as runs of [encode?, text]: True to encode, False plain, None whitespace."""
    tokens = _TOKENS.findall(value)
    # Runs: (encode?, text). Whitespace between two encoded words joins their run, so it
    # is inside an encoded-word; whitespace next to a plain word stays literal.
    # Decoders differ on a run of spaces in plain text (compat32 keeps one): words next to
    # one are encoded, so the spaces are inside an encoded-word.
    forced = {
        i + d for i, tok in enumerate(tokens) if tok.isspace() and tok != " " for d in (-1, 1)
    }
    runs: list[list[Any]] = []
    for i, tok in enumerate(tokens):
        if tok.isspace():
            runs.append([None, tok])
            continue
        enc = _needs_encoding(tok) or i in forced
        if enc and len(runs) >= 2 and runs[-1][0] is None and runs[-2][0] is True:
            space = runs.pop()
            runs[-1][1] += space[1] + tok
        elif enc and runs and runs[-1][0] is True:
            runs[-1][1] += tok
        else:
            runs.append([enc, tok])
    return runs


def encode_text(name: str, value: str, *, linesep: str = "\r\n") -> str:
    """``Name: value`` folded for the wire (unstructured text, RFC 2047 where needed)."""
    runs = _runs(header_text(value))
    lines: list[str] = []
    line = f"{name}:"
    pending_space = " "
    for enc, text in runs:
        if enc is None:
            pending_space = text
            continue
        if enc:
            room = _LINE_MAX - len(line) - len(pending_space)
            words = _b64_words(text, room if room >= 20 else _WORD_MAX)
            for i, word in enumerate(words):
                sep = pending_space if i == 0 else " "
                if len(line) + len(sep) + len(word) > _LINE_MAX and line.strip(" ") != f"{name}:":
                    lines.append(line)
                    line = " " + word  # the fold is the separator (one space)
                    if i == 0 and len(sep) > 1:
                        line = sep + word
                else:
                    line += sep + word
        else:
            if len(line) + len(pending_space) + len(text) > _LINE_MAX and line != f"{name}:":
                lines.append(line)
                line = pending_space + text  # unfolding gives back the same space
            else:
                line += pending_space + text
        pending_space = " "
    lines.append(line)
    return linesep.join(lines) + linesep


def encode_display_name(name: str) -> str:
    """A display name for a mailbox: as it is (quoted if need be) when ASCII, else one
    encoded-word (see the module note on why never split)."""
    name = header_text(name)
    if not _needs_encoding(name) and all(not _needs_encoding(w) for w in name.split()):
        if _ATOM_TEXT.match(name) and "." not in name:
            return name
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _b64_word(name)


def encode_mailboxes(name: str, mailboxes: list[tuple[str, str]], *, linesep: str = "\r\n") -> str:
    """``Name: a, b`` with each display name per :func:`encode_display_name`."""
    parts = []
    for display, addr in mailboxes:
        addr = header_text(addr).replace(" ", "")
        parts.append(f"{encode_display_name(display)} <{addr}>" if header_text(display) else addr)
    lines: list[str] = []
    line = f"{name}:"
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "")
        for j, bit in enumerate(piece.rsplit(" <", 1) if " <" in piece else [piece]):
            bit = bit if j == 0 else "<" + bit
            if len(line) + 1 + len(bit) > _LINE_MAX and line != f"{name}:":
                lines.append(line)
                line = " " + bit
            else:
                line += " " + bit
    lines.append(line)
    return linesep.join(lines) + linesep


class WirePolicy(EmailPolicy):
    """email.policy.SMTP with our folding of text and address headers (see above)."""

    def _fold(self, name: str, value: Any, refold_binary: bool = False) -> str:
        key = name.lower()
        linesep = self.linesep
        if key in TEXT_HEADERS:
            return encode_text(name, str(value), linesep=linesep)
        if key in ADDRESS_HEADERS:
            addresses = getattr(value, "addresses", None)
            if addresses is None:
                header = self.header_factory(name, str(value))
                addresses = getattr(header, "addresses", None)
            if addresses and all(a.addr_spec.isascii() for a in addresses):
                return encode_mailboxes(
                    name, [(a.display_name, a.addr_spec) for a in addresses], linesep=linesep
                )
        return str(super()._fold(name, value, refold_binary))  # type: ignore[misc]


POLICY = WirePolicy(**SMTP.__dict__)


def wire(message: Any) -> Any:
    """``message`` with :data:`POLICY`, so that every header it has is folded by our rules
    when it is serialized (returns the message, for ``wire(msg)["Subject"] = …``)."""
    message.policy = POLICY
    return message
