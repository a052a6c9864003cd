"""A region's place names found in text, with case endings: "Joensuussa", "Петрозаводске",
"Северной Карелии" all name a place of feeds.yaml's ``regions.*.places``.

Finnish and Russian inflect names by changing their ending, so a place word matches a text
word that starts with the place word's stem (the word without its last one or two vowels)
and goes on for at most :data:`MAX_ENDING` letters. A name of several words matches the same
number of consecutive words. This is deliberately lenient (a source mentioning "Kiteellä"
is about Kitee); it is not used to translate, only to tell whether a text is about a region
and which town an event's place names.

Used by the source watchdog (does a source write about its region?), ``require_place``
sources (keep only items naming the region) and events (the town of a venue).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MAX_ENDING", "PlaceMatcher", "split_place"]

#: How many letters a case ending may add after a place word's stem.
MAX_ENDING = 5
_VOWELS = set("aeiouyäöåаеёиоуыэюяйь")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)


def _fold(text: str) -> str:
    return text.casefold().replace("ё", "е")


def _stem(word: str) -> str:
    w = _fold(word)
    cut = w
    for _ in range(2):
        if len(cut) > 3 and cut[-1] in _VOWELS:
            cut = cut[:-1]
    return cut


def _words(text: str) -> list[str]:
    return [_fold(w) for w in _WORD.findall(text)]


@dataclass(frozen=True)
class _Place:
    name: str  # as written in feeds.yaml
    stems: tuple[str, ...]

    def matches_at(self, words: list[str], i: int) -> bool:
        if i + len(self.stems) > len(words):
            return False
        for stem, word in zip(self.stems, words[i : i + len(self.stems)], strict=True):
            if not word.startswith(stem) or len(word) - len(stem) > MAX_ENDING:
                return False
        return True


@dataclass(frozen=True)
class PlaceMatcher:
    """The places of one region (or any list of names), in the order given."""

    names: tuple[str, ...]
    _places: tuple[_Place, ...] = field(init=False, repr=False, compare=False)
    _first: frozenset[str] = field(init=False, repr=False, compare=False)

    def __init__(self, names: Iterable[str]) -> None:
        clean = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
        places = tuple(
            _Place(n, tuple(_stem(w) for w in _WORD.findall(n))) for n in clean if _WORD.search(n)
        )
        object.__setattr__(self, "names", clean)
        object.__setattr__(self, "_places", places)
        # Every place word's first stem, by its first two letters: most text words are skipped
        # with one set lookup.
        object.__setattr__(self, "_first", frozenset(p.stems[0][:2] for p in places))

    def __bool__(self) -> bool:
        return bool(self._places)

    def found(self, text: str) -> list[str]:
        """The places ``text`` names (as written in the list), each once, in list order."""
        words = _words(text)
        hits: set[str] = set()
        for i, w in enumerate(words):
            if w[:2] not in self._first:
                continue
            for p in self._places:
                if p.name not in hits and p.matches_at(words, i):
                    hits.add(p.name)
        return [p.name for p in self._places if p.name in hits]

    def mentions(self, text: str) -> bool:
        """Whether ``text`` names any of the places."""
        words = _words(text)
        for i, w in enumerate(words):
            if w[:2] in self._first and any(p.matches_at(words, i) for p in self._places):
                return True
        return False


def split_place(
    text: str | None, towns: PlaceMatcher | None = None
) -> tuple[str | None, str | None]:
    """(venue, town) of a place as a calendar or a page writes it.

    "Carelicum, Koskikatu 5, 80100 Joensuu" → ("Carelicum", "Joensuu"): the town is the first
    of ``towns`` the text names; the venue is the first comma-separated part that is not
    just that town (street addresses and postcodes after it are dropped), so "Joensuun
    pääkirjasto, Koskikatu 25, Joensuu" → ("Joensuun pääkirjasto", "Joensuu"). Without a known town the
    whole text is the venue. Empty text → (None, None).
    """
    if not text or not text.strip():
        return None, None
    flat = " ".join(text.split())
    town = None
    if towns:
        found = towns.found(flat)
        town = found[0] if found else None
    parts = [p.strip() for p in flat.split(",") if p.strip()]
    if town is None:
        return flat, None
    # A part that is only the town ("Joensuu", "80100 Joensuu") is dropped; one that merely
    # names it ("Joensuun pääkirjasto", the town's main library) is the venue.
    only = PlaceMatcher([town])._places
    rest = [p for p in parts if not (only and _is_only(only[0], p))]
    venue = rest[0] if rest else None
    return venue, town


def _is_only(place: _Place, text: str) -> bool:
    words = _words(text)
    return len(words) == len(place.stems) and place.matches_at(words, 0)
