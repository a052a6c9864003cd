"""Near-identical stories: a SimHash fingerprint of an item's title and lead
(:func:`fingerprint`, :func:`similar`), and the :class:`StoryIndex` that links an item to the
same story from another source of its region. Pure: no database, no network.

The fetch step's writer loads the index from recent items, asks it for a match for each new
item and stores the groups it forms.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

try:  # numpy comes with py3langid; without it the index falls back to a Python loop
    import numpy as _numpy
except ImportError:  # pragma: no cover
    _numpy = None  # type: ignore[assignment]


# --- near-duplicate stories ---------------------------------------------------------------

#: Two fingerprints whose SimHashes differ in at most this many of 64 bits are one story.
#: Chosen on the Finnish/Russian pairs in tests/test_clean.py: rewordings of one story
#: (another paper's headline and lead) land 3–18 bits apart; different stories from the same
#: town, even with the same headline pattern ("Глава Карелии встретился с жителями
#: Кондопоги / Сортавалы"), 24 or more; unrelated texts average 32.
SIMILAR_MAX_BITS = 18
#: Words are cut to this many characters before hashing, a crude stemmer that lets the
#: inflected forms of Finnish and Russian words (Petroskoissa / Petroskoin, Петрозаводске /
#: Петрозаводска) count as the same word.
STEM_CHARS = 5
#: Shorter words are skipped: in Finnish and Russian they are nearly all function words
#: (ja, on, ei, и, в, на, что), which say nothing about which story it is.
MIN_WORD_CHARS = 5
#: The lead is read up to this many words; the rest of a long text is mostly detail and
#: boilerplate that differs between two reports of one story.
LEAD_WORDS = 40
#: Names (capitalized words not opening a sentence: Kondopoga, Ilomantsi, Парфенчиков) weigh
#: this much more than other words: they tell stories apart best.
NAME_WEIGHT = 2.0

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_RUN = re.compile(r"\w+")
#: NAME_WEIGHT as an integer: every weight is a whole number, so the sums below are exact.
_NAME = int(NAME_WEIGHT)


def _words(part: str, limit: int) -> list[str]:
    """``_WORD.findall(part, 0, 20 * limit)[:limit]``, at half the cost: ``\\w+`` runs are
    found first (a simpler pattern for the regex engine), and only in the rare text where
    one holds a digit, "_" or another non-letter (2026, x², snake_case) are the runs split
    by :data:`_WORD`. A run of letters is exactly one match of it; any other run holds
    exactly its matches, as no match crosses a non-word character."""
    runs = _RUN.findall(part, 0, 20 * limit)
    if not "".join(runs).isalpha():
        runs = [w for run in runs for w in ((run,) if run.isalpha() else _WORD.findall(run))]
    return runs[:limit]


def _stems(title: str, text: str) -> tuple[list[str], list[str]]:
    """The stems of title and lead that count: those of plain words, and those of names,
    one per occurrence (a SimHash is a sum, so repeats need not be gathered first)."""
    plain: list[str] = []
    names: list[str] = []
    for part, limit in ((title, 100), (text, LEAD_WORDS)):
        words = _words(part, limit)
        if not words:
            continue
        # One lower() for all words (ё → е so "ёлка" and "елка" meet).
        lows = " ".join(words).lower().replace("ё", "е").split(" ")
        # The part's first word opens a sentence: its capital says nothing, so plain weight.
        if len(words[0]) >= MIN_WORD_CHARS:
            plain.append(lows[0][:STEM_CHARS])
        for word, low in zip(words[1:], lows[1:], strict=False):
            if len(word) >= MIN_WORD_CHARS:
                (names if word[0].isupper() else plain).append(low[:STEM_CHARS])
    return plain, names


# SimHash with 64 counters packed into one Python integer: counter j lives in bits
# 16j … 16j+15 ("lane" j). A stem's hash is stored "spread", bit j of the hash moved to the
# bottom of lane j, so adding weight × spread(hash) to the accumulator counts that weight
# in every lane whose bit is set, all 64 at once, in C. A lane holds at most the total
# weight (≤ 2 × 140 words), far below 2**15, so lanes never carry into each other.
_LANE = 16
_LANE_TOP = 1 << (_LANE - 1)
#: 1 at the bottom of each of the 64 lanes.
_LANE_ONES = sum(1 << (_LANE * j) for j in range(64))
#: Byte value → its 8 bits spread over 8 lanes (least significant bit in the lowest lane).
_SPREAD_BYTE = tuple(sum(1 << (_LANE * j) for j in range(8) if b >> j & 1) for b in range(256))
#: A lane's high byte → "1" if its top bit is set, else "0" (for int(…, 2)).
_TOP_BIT_DIGIT = bytes(0x31 if b & 0x80 else 0x30 for b in range(256))
#: Stem → spread hash. A region's vocabulary repeats, so hashes are kept; past this many
#: stems the cache starts afresh (about 200 bytes each).
MAX_CACHED_STEMS = 100_000


def _spread(stem: str) -> int:
    """The stem's 64-bit blake2b hash, bit j (little-endian byte order) moved to lane j."""
    digest = hashlib.blake2b(stem.encode(), digest_size=8).digest()
    table = _SPREAD_BYTE
    return (
        table[digest[0]]
        | table[digest[1]] << 128
        | table[digest[2]] << 256
        | table[digest[3]] << 384
        | table[digest[4]] << 512
        | table[digest[5]] << 640
        | table[digest[6]] << 768
        | table[digest[7]] << 896
    )


class _SpreadCache(dict[str, int]):
    """Stem → spread hash, computed on the first lookup (so ``map(cache.__getitem__, …)``
    stays in C for every stem seen before)."""

    def __missing__(self, stem: str) -> int:
        spread = self[stem] = _spread(stem)
        return spread


_spread_cache = _SpreadCache()


def fingerprint(title: str, text: str) -> str:
    """A 64-bit SimHash (16 hex digits) over the weighted word stems of title and lead.

    Bit j is set when the stems whose hash has bit j set outweigh those whose hash has it
    clear. Compare two with :func:`similar`; :data:`SIMILAR_MAX_BITS` says how close is
    "same story". All zeros when there are no usable words.
    """
    plain, names = _stems(title, text)
    if not plain and not names:
        return "0" * 16
    cache = _spread_cache
    if len(cache) > MAX_CACHED_STEMS:
        cache.clear()
    get = cache.__getitem__
    acc = sum(map(get, plain)) + _NAME * sum(map(get, names))
    total = len(plain) + _NAME * len(names)
    if total >= _LANE_TOP:  # unreachable with the word limits above; keeps lanes apart
        raise ValueError(f"fingerprint: total weight {total} does not fit a {_LANE}-bit lane")
    # Bit j is set ⇔ weight with bit j set > weight with it clear ⇔ 2·lane_j > total ⇔
    # lane_j ≥ total // 2 + 1. Adding 2**15 − (total // 2 + 1) to every lane sets the
    # lane's top bit exactly then; those 64 top bits are the fingerprint.
    acc += _LANE_ONES * (_LANE_TOP - (total // 2 + 1))
    high_bytes = acc.to_bytes(128, "little")[1::2]
    return f"{int(high_bytes.translate(_TOP_BIT_DIGIT)[::-1], 2):016x}"


def distance(fp_a: str, fp_b: str) -> int:
    """Hamming distance of two fingerprints, in bits (0–64)."""
    return (int(fp_a, 16) ^ int(fp_b, 16)).bit_count()


def similar(fp_a: str, fp_b: str) -> bool:
    """Whether two fingerprints are the same story (at most SIMILAR_MAX_BITS bits apart).

    An empty text (fingerprint all zeros) is similar to nothing.
    """
    if not fp_a or not fp_b or fp_a == "0" * 16 or fp_b == "0" * 16:
        return False
    return distance(fp_a, fp_b) <= SIMILAR_MAX_BITS


# --- story groups ----------------------------------------------------------------------------

#: Only stories this close in time are linked (a topic recurring a month later is a new story).
STORY_WINDOW = timedelta(days=4)


@dataclass
class StoryRef:
    """An item in the story index; ``group_id`` is filled when it joins a group."""

    item_id: int
    source_id: str
    fingerprint: int
    group_id: int | None


class StoryIndex:
    """Recent items' fingerprints per region, to find the same story from another source.

    ``similar`` decides; numpy (when importable) narrows the candidates first with one
    vectorised XOR + popcount over the region, so linking stays cheap with tens of thousands
    of recent items (a Python loop over them per new item was the first fetch's bottleneck).
    """

    def __init__(self, similar: Callable[[str, str], bool], max_bits: int | None = None) -> None:
        self.similar = similar
        self.max_bits = max_bits
        self._refs: dict[str, list[StoryRef]] = {}
        self._arrays: dict[str, Any] = {}
        # numpy 2.0 brought bitwise_count; an older one is no faster than the Python loop.
        usable = max_bits is not None and hasattr(_numpy, "bitwise_count")
        self._np: Any = _numpy if usable else None

    def __len__(self) -> int:
        return sum(len(v) for v in self._refs.values())

    def mark(self) -> dict[str, int]:
        """A checkpoint to :meth:`rollback` to when the transaction that used it fails."""
        self._changed: list[StoryRef] = []
        return {region: len(refs) for region, refs in self._refs.items()}

    def rollback(self, mark: dict[str, int]) -> None:
        for region in list(self._refs):
            del self._refs[region][mark.get(region, 0) :]
        for ref in getattr(self, "_changed", []):
            ref.group_id = None
        self._changed = []

    def set_group(self, ref: StoryRef, group_id: int) -> None:
        ref.group_id = group_id
        if not hasattr(self, "_changed"):
            self._changed = []
        self._changed.append(ref)

    def extend(self, region: str, refs: list[StoryRef]) -> None:
        """Many at once (loading the index): one array build instead of one per item."""
        if self._np is None or not refs:
            for ref in refs:
                self.add(region, ref)
            return
        np = self._np
        mine = self._refs.setdefault(region, [])
        old = self._arrays.get(region)
        mine.extend(refs)
        arr = np.zeros(max(64, 2 * len(mine)), dtype=np.uint64)
        if old is not None:
            arr[: len(mine) - len(refs)] = old[: len(mine) - len(refs)]
        arr[len(mine) - len(refs) : len(mine)] = np.array(
            [r.fingerprint for r in refs], dtype=np.uint64
        )
        self._arrays[region] = arr

    def add(self, region: str, ref: StoryRef) -> None:
        refs = self._refs.setdefault(region, [])
        refs.append(ref)
        if self._np is not None:
            arr = self._arrays.get(region)
            n = len(refs)
            if arr is None or n > len(arr):
                new = self._np.zeros(max(64, 2 * n), dtype=self._np.uint64)
                if arr is not None:
                    new[: len(arr)] = arr
                arr = self._arrays[region] = new
            arr[n - 1] = ref.fingerprint

    def match(self, region: str, source_id: str, fp: str) -> StoryRef | None:
        """The closest recent item of the region from *another* source that is the same
        story, or None."""
        refs = self._refs.get(region)
        if not refs or not fp or int(fp, 16) == 0:
            return None
        value = int(fp, 16)
        if self._np is not None and self.max_bits is not None:
            np = self._np
            arr = self._arrays[region][: len(refs)]
            dist = np.bitwise_count(arr ^ np.uint64(value))
            idx = np.nonzero(dist <= self.max_bits)[0]
            candidates = sorted((int(dist[i]), int(i)) for i in idx)
            pool = [refs[i] for _d, i in candidates]
        else:
            pool = sorted(refs, key=lambda r: (r.fingerprint ^ value).bit_count())
        for ref in pool:
            if ref.source_id != source_id and self.similar(f"{ref.fingerprint:016x}", fp):
                return ref
        return None
