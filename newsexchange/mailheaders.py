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

import re
from email.utils import formataddr

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
    return formataddr((clean_name, clean_addr), charset="utf-8")
