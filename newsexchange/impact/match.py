"""The pick-up matcher (pure: no database, no network).

A **story** is one item of a sent digest, with the text the digest carried (its translation
into the receiving language) and its original text. A **candidate** is an item that a source
of the receiving region published after the digest was sent. :class:`Matcher` is built once
over many stories and asked, candidate by candidate, which stories that candidate retells;
its cost must not grow as stories × candidates (an index over the stories, so a candidate is
compared with the few stories it shares rare features with).

Precision first: a wrong pick-up in a funder's report is worse than a missed one.

The method (measured on ``tests/data/pickup/``, see its README): the features of
:mod:`.features` — names, places, numbers, dates, crude stems — are taken from the story's
translation and from its original. A candidate is compared in the language it shares with the
story (the translation's or the original's) by the cosine of IDF-weighted stems and by its
best-matching sentence pairs, and in every language by shared names, numbers and dates. Each
kind of evidence adds to a noisy-or score; fewer than two kinds cap the score below the
threshold (the same city, or the same wording of a routine event, is never enough), and
contradicting years, dates or figures lower it (next year's edition of the same festival).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from newsexchange.impact.features import Features, extract, is_year, number_weight

__all__ = ["CandidateText", "Match", "Matcher", "StoryText"]


@dataclass(frozen=True)
class StoryText:
    """One story of a sent digest."""

    key: int  # the story's item id
    language: str  # the receiving language: the language of ``title``/``summary``
    title: str  # as the digest carried it (translated)
    summary: str
    original_language: str
    original_title: str
    original_summary: str
    published_at: datetime | None = None


@dataclass(frozen=True)
class CandidateText:
    """One item of the receiving side's media."""

    key: int  # its item id
    language: str
    title: str
    summary: str
    published_at: datetime | None = None


@dataclass(frozen=True)
class Match:
    """A candidate that retells a story: score in 0..1 and what it rests on.

    ``evidence`` is for the editor who confirms or rejects the suggestion: ``names`` and
    ``places`` shared (as the story spells them), ``numbers`` (canonical: ``4.8``, ``1200``)
    and ``dates`` (``MM-DD``) shared, ``sentences`` — up to three ``[story sentence, candidate
    sentence, similarity]`` pairs — and ``language``, the language the wording was compared
    in (the candidate's; no sentences when the story has no text in it)."""

    story: int  # StoryText.key
    candidate: int  # CandidateText.key
    score: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Story:
    text: StoryText
    # per language ("ru", "fi", …): the features of the text in that language
    by_language: dict[str, Features]
    names: dict[str, str]
    places: dict[str, str]
    numbers: set[str]
    dates: set[str]


#: A feature carried by more than this share of the stories is no key to the index (the
#: region's capital, the current year, the word "city"): it would make every candidate compared
#: with most stories. It still counts in the score.
_COMMON_SHARE = 0.05
_COMMON_FLOOR = 8
#: Places too broad to tell two towns' news apart.
_BROAD_PLACES = frozenset({"karelia", "finland", "russia", "europe", "saint_petersburg", "moscow"})
#: How many of the stories sharing most features with a candidate are scored at all.
_SHORTLIST = 40
#: Below this best-sentence similarity a pair of sentences is not shown to the editor.
_SENTENCE_EVIDENCE = 0.3


class Matcher:
    """An index over ``stories``; :meth:`matches` says which of them a candidate retells.

    The index maps each story's names, numbers, dates and (language, stem) pairs to the
    stories carrying them; a candidate is scored only against the few stories it shares the
    most such features with, so the cost of a candidate grows with its own length and the
    length of the posting lists it touches, not with the number of stories. ``compared``
    counts the (story, candidate) pairs scored so far — a test pins that a candidate sharing
    nothing with a story is never compared with it.

    Story keys are expected unique (a later story with the same key replaces the earlier).
    Several near-identical stories (follow-ups of one event) may all match one candidate;
    they come best first and the caller decides."""

    def __init__(self, stories: Sequence[StoryText], *, min_score: float = 0.5) -> None:
        self.min_score = min_score
        self.compared = 0
        self._stories: dict[int, _Story] = {}
        df: Counter[str] = Counter()
        postings: defaultdict[str, list[int]] = defaultdict(list)
        for st in stories:
            translated = extract(st.title, st.summary)
            by_language = {st.language: translated}
            if st.original_language != st.language and (st.original_title or st.original_summary):
                by_language[st.original_language] = extract(st.original_title, st.original_summary)
            names: dict[str, str] = {}
            places: dict[str, str] = {}
            numbers: set[str] = set()
            dates: set[str] = set()
            for f in by_language.values():
                for k, v in f.names.items():
                    names.setdefault(k, v)
                for k, v in f.places.items():
                    places.setdefault(k, v)
                numbers |= f.numbers
                dates |= f.dates
            story = _Story(st, by_language, names, places, numbers, dates)
            self._stories[st.key] = story
            for key in _index_keys(story):
                df[key] += 1
                postings[key].append(st.key)
        n = max(1, len(self._stories))
        self._n = n
        self._df = df
        limit = max(_COMMON_FLOOR, int(n * _COMMON_SHARE))
        self._postings = {k: v for k, v in postings.items() if len(v) <= limit}

    def _idf(self, key: str) -> float:
        return math.log((self._n + 1) / (self._df.get(key, 0) + 0.5))

    def matches(self, candidate: CandidateText) -> list[Match]:
        """The stories ``candidate`` retells, best first, each with score ≥ ``min_score``."""
        cf = extract(candidate.title, candidate.summary)
        lang = candidate.language
        shared: Counter[int] = Counter()
        for key in _candidate_keys(cf, lang):
            for sid in self._postings.get(key, ()):
                shared[sid] += 1
        out = []
        for sid, count in shared.most_common(_SHORTLIST):
            if count < 2:
                break
            story = self._stories[sid]
            if (
                candidate.published_at is not None
                and story.text.published_at is not None
                and candidate.published_at < story.text.published_at
            ):
                continue  # a pick-up comes after the story, never before
            self.compared += 1
            m = self._score(story, candidate, cf)
            if m.score >= self.min_score:
                out.append(m)
        out.sort(key=lambda m: (-m.score, m.story))
        return out

    def _score(self, story: _Story, candidate: CandidateText, cf: Features) -> Match:
        lang = candidate.language
        sf = story.by_language.get(lang)
        cosine = 0.0
        pairs: list[list[Any]] = []
        best_sentence = 0.0
        if sf is not None:
            w = {s: self._idf(f"w:{lang}:{s}") for s in sf.stems | cf.stems}
            dot = sum(w[s] ** 2 for s in sf.stems & cf.stems)
            na = math.sqrt(sum(w[s] ** 2 for s in sf.stems))
            nb = math.sqrt(sum(w[s] ** 2 for s in cf.stems))
            cosine = dot / (na * nb) if na and nb else 0.0
            pairs, best_sentence = _sentence_pairs(sf, cf)
        names = sorted(set(story.names) & set(cf.names))
        # one person is one piece of evidence, however many of their names are shared
        people = max(
            (
                sum(1 for g in f.name_groups if g & cf.names.keys())
                for f in story.by_language.values()
            ),
            default=0,
        )
        places = sorted(set(story.places) & set(cf.places))
        numbers = sorted(story.numbers & cf.numbers)
        dates = sorted(story.dates & cf.dates)

        e_text = min(1.0, 1.4 * cosine + 0.3 * best_sentence)
        e_names = 1 - 0.5**people
        # the year the story came out says almost nothing: every item of that year may name it
        this_year = str(story.text.published_at.year) if story.text.published_at else ""
        weight = sum(0.15 if k == this_year else number_weight(k) for k in numbers)
        e_numbers = 1 - 0.5**weight
        e_dates = 1 - 0.4 ** len(dates)
        e_places = 0.12 * min(2, len(places))
        # Without a shared language there can be no wording to compare: the facts must carry
        # the score alone, so they weigh more.
        facts = 0.45 if sf is not None else 0.6
        score = 1 - (
            (1 - 0.6 * e_text)
            * (1 - facts * e_names)
            * (1 - facts * e_numbers)
            * (1 - 0.35 * e_dates)
            * (1 - e_places)
        )
        kinds = (e_text >= 0.3) + bool(names) + (weight >= 1.0) + bool(dates)
        if kinds < 2:
            score = min(score, 0.45)
        # Contradictions: the same festival a year later, the same kind of accident with
        # other figures. Both sides must state the thing for it to contradict.
        s_years = {k for k in story.numbers if is_year(k)}
        if not s_years and story.dates and story.text.published_at is not None:
            # a date without a year is in the year the story was published: the candidate
            # that tells of 28 February 2025 is last year's festival, not this one
            s_years = {str(story.text.published_at.year)}
        c_years = {k for k in cf.numbers if is_year(k)}
        if s_years and c_years and not s_years & c_years:
            score *= 0.55
        if story.dates and cf.dates and not dates:
            score *= 0.7
        s_local = story.places.keys() - _BROAD_PLACES
        c_local = cf.places.keys() - _BROAD_PLACES
        if s_local and c_local and not s_local & c_local:
            score *= 0.7  # the same kind of news from another town
        s_figs = {k for k in story.numbers if number_weight(k) >= 1}
        c_figs = {k for k in cf.numbers if number_weight(k) >= 1}
        if s_figs and c_figs and not s_figs & c_figs:
            score *= 0.75 if len(c_figs) == 1 else 0.65
        evidence: dict[str, Any] = {
            "names": [story.names[k] for k in names],
            "places": [story.places[k] for k in places],
            "numbers": numbers,
            "dates": dates,
            "sentences": pairs,
            "language": lang,
        }
        return Match(story.text.key, candidate.key, round(max(0.0, min(1.0, score)), 3), evidence)


def _index_keys(story: _Story) -> set[str]:
    keys = {f"n:{k}" for k in story.names}
    keys |= {f"#:{k}" for k in story.numbers if number_weight(k) >= 1}
    keys |= {f"d:{k}" for k in story.dates}
    for lang, f in story.by_language.items():
        keys |= {f"w:{lang}:{s}" for s in f.stems}
    return keys


def _candidate_keys(cf: Features, lang: str) -> set[str]:
    keys = {f"n:{k}" for k in cf.names}
    keys |= {f"#:{k}" for k in cf.numbers if number_weight(k) >= 1}
    keys |= {f"d:{k}" for k in cf.dates}
    keys |= {f"w:{lang}:{s}" for s in cf.stems}
    return keys


def _sentence_pairs(sf: Features, cf: Features) -> tuple[list[list[Any]], float]:
    """The best-matching sentence pairs (Dice of stems), greedily, each sentence used once."""
    scored = []
    for i, (ss, a) in enumerate(sf.sentences):
        for j, (cs, b) in enumerate(cf.sentences):
            if len(a) < 2 or len(b) < 2:
                continue
            sim = 2 * len(a & b) / (len(a) + len(b))
            if sim > 0:
                scored.append((sim, i, j, ss, cs))
    scored.sort(key=lambda t: -t[0])
    used_i: set[int] = set()
    used_j: set[int] = set()
    pairs: list[list[Any]] = []
    for sim, i, j, ss, cs in scored:
        if i in used_i or j in used_j or sim < _SENTENCE_EVIDENCE:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append([ss, cs, round(sim, 2)])
        if len(pairs) == 3:
            break
    return pairs, scored[0][0] if scored else 0.0
