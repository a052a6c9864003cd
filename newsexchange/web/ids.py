"""The ``{name:id}`` path convertor: a database id, or no match (so a 404).

``/digests/{digest_id:id}`` matches only the decimal numbers a 64-bit signed integer column
holds (0 … 2**63-1, no sign, no leading zeros). Anything else — ``/digests/abc``,
``/digests/99999999999999999999`` — does not match the route, and Starlette answers 404
before any handler runs: the database is never asked for an id it cannot hold (SQLite's
driver raises OverflowError past 2**63-1, PostgreSQL's "out of range for type bigint"),
and no route needs a check of its own. Registered when this module is imported
(``web/app.py`` does, before any route is built).
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

from newsexchange.db import MAX_ID


def at_most(n: int) -> str:
    """A regular expression matching exactly the decimal numbers 0 … ``n`` (no leading zeros).

    Shorter numbers than ``n`` match freely; one of the same length matches when it agrees
    with ``n`` up to some digit and is smaller there (the usual digit-by-digit bound), or is
    ``n`` itself.
    """
    digits = str(n)
    width = len(digits)
    alternatives = ["0"]
    if width > 1:
        alternatives.append(f"[1-9][0-9]{{0,{width - 2}}}")
    for i, ch in enumerate(digits):
        low = 1 if i == 0 else 0
        top = int(ch) - 1
        if top < low:
            continue
        rest = width - i - 1
        span = f"[{low}-{top}]" if top > low else str(low)
        alternatives.append(digits[:i] + span + (f"[0-9]{{{rest}}}" if rest else ""))
    if n > 0:
        alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


class IdConvertor(Convertor[int]):
    regex = at_most(MAX_ID)

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        if not 0 <= value <= MAX_ID:
            raise ValueError(f"not a database id: {value}")
        return str(value)


register_url_convertor("id", IdConvertor())
