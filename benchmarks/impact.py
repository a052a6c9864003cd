"""Pick-up matching at scale: 1,000 sent stories against 50,000 receiving-side items.

    .venv/bin/python benchmarks/impact.py [--stories 1000] [--candidates 50000]

What it does: makes ``--stories`` stories from the 40 of the pick-up set
(``tests/data/pickup/``), each variant with its own figures (every number shifted by the
variant's offset) and its own person (a made-up name written in Latin and Cyrillic letters),
then ``--candidates`` items: one in ten a retelling of one of those stories (varied the same
way), the rest near misses of the set with figures and people of their own. It builds the
:class:`~newsexchange.impact.Matcher` once and runs every item through it, as the pick-up
step does.

Prints seconds (index build; matching, and per item), how many (story, item) pairs were
scored against the stories × items there are, how many retellings were found, and the
process's peak memory (``ru_maxrss``) after the build and after each fifth of the items: it
stays flat, since nothing is kept per item. JSON with every figure on the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsexchange.impact import CandidateText, Matcher, StoryText  # noqa: E402
from tests.pickup_set import load  # noqa: E402

_SYLLABLES = [("ka", "ка"), ("ri", "ри"), ("mo", "мо"), ("te", "те"), ("sa", "са"),
              ("nu", "ну"), ("lo", "ло"), ("vi", "ви"), ("pe", "пе"), ("do", "до"),
              ("ha", "ха"), ("ku", "ку"), ("ne", "не"), ("ti", "ти"), ("ro", "ро"),
              ("ma", "ма"), ("si", "си"), ("bu", "бу"), ("ga", "га"), ("zo", "зо")]  # fmt: skip
_SAID = {"fi": "{} kommentoi.", "ru": "{} прокомментировал.", "en": "{} commented."}


def _person(rng: random.Random) -> tuple[str, str]:
    """A made-up full name in Latin and in Cyrillic letters (the same name)."""
    parts = []
    for n in (3, 4):
        sy = [rng.choice(_SYLLABLES) for _ in range(n)]
        parts.append(("".join(a for a, _ in sy).title(), "".join(b for _, b in sy).title()))
    return f"{parts[0][0]} {parts[1][0]}", f"{parts[0][1]} {parts[1][1]}"


def _vary(text: str, offset: int) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group(0)) + offset), text)


def _with(text: str, language: str, person: tuple[str, str], offset: int) -> str:
    name = person[1] if language == "ru" else person[0]
    return f"{_vary(text, offset)} {_SAID.get(language, _SAID['en']).format(name)}"


def _make(
    stories: int, candidates: int, seed: int = 14
) -> tuple[list[StoryText], list[CandidateText], set[tuple[int, int]]]:
    rng = random.Random(seed)
    cases = load()
    made: list[StoryText] = []
    variants: list[tuple[int, tuple[str, str], int]] = []  # (case index, person, offset)
    for i in range(stories):
        ci = i % len(cases)
        s = cases[ci].story
        person, offset = _person(rng), 3 + i * 7
        variants.append((ci, person, offset))
        made.append(
            replace(
                s,
                key=i + 1,
                title=_vary(s.title, offset),
                summary=_with(s.summary, s.language, person, offset),
                original_title=_vary(s.original_title, offset),
                original_summary=_with(s.original_summary, s.original_language, person, offset),
            )
        )
    items: list[CandidateText] = []
    truth: set[tuple[int, int]] = set()
    misses = [m for c in cases for _, m in c.near_misses]
    for j in range(candidates):
        key = 1_000_000 + j
        if j % 10 == 0:
            si = rng.randrange(stories)
            ci, person, offset = variants[si]
            r = rng.choice(cases[ci].retellings)
            items.append(CandidateText(key, r.language, _vary(r.title, offset),
                                       _with(r.summary, r.language, person, offset), r.published_at))  # fmt: skip
            truth.add((si + 1, key))
        else:
            m = rng.choice(misses)
            offset = rng.randrange(1, 5000)
            items.append(CandidateText(key, m.language, _vary(m.title, offset),
                                       _with(m.summary, m.language, _person(rng), offset), m.published_at))  # fmt: skip
    return made, items, truth


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(stories: int, candidates: int) -> dict[str, float | int | list[float]]:
    """Build the index over ``stories`` and run ``candidates`` items through it; the figures."""
    made, items, truth = _make(stories, candidates)
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    matcher = Matcher(made)
    build = time.perf_counter() - t0
    rss_built = _rss_mb()
    found = true_found = 0
    rss_steps: list[float] = []
    step = max(1, len(items) // 5)
    t0 = time.perf_counter()
    for n, item in enumerate(items, 1):
        for m in matcher.matches(item):
            found += 1
            true_found += (m.story, m.candidate) in truth
        if n % step == 0:
            rss_steps.append(round(_rss_mb(), 1))
    match = time.perf_counter() - t0
    return {
        "stories": stories,
        "candidates": candidates,
        "build_s": round(build, 2),
        "match_s": round(match, 2),
        "per_candidate_ms": round(1000 * match / max(1, len(items)), 3),
        "pairs_scored": matcher.compared,
        "pairs_possible": stories * candidates,
        "matches": found,
        "retellings": len(truth),
        "retellings_found": true_found,
        "rss_before_build_mb": round(rss_before, 1),
        "rss_after_build_mb": round(rss_built, 1),
        "rss_per_fifth_of_items_mb": rss_steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=50000)
    args = ap.parse_args()
    r = run(args.stories, args.candidates)
    print(f"index over {r['stories']} stories: {r['build_s']} s")
    print(f"{r['candidates']} items: {r['match_s']} s, {r['per_candidate_ms']} ms each")
    print(f"pairs scored: {r['pairs_scored']} of {r['pairs_possible']} stories × items "
          f"({100 * int(r['pairs_scored']) / max(1, int(r['pairs_possible'])):.3f} %)")  # fmt: skip
    print(
        f"matches: {r['matches']}, of them true: {r['retellings_found']} of {r['retellings']} retellings"
    )
    steps = r["rss_per_fifth_of_items_mb"]
    assert isinstance(steps, list)
    grows = steps[-1] - steps[0] if steps else 0.0
    print(f"peak memory (ru_maxrss): {r['rss_before_build_mb']} MB with the data, "
          f"{r['rss_after_build_mb']} MB after the build, {steps} MB after each fifth of the items "
          f"— {'flat: it does not grow as stories × items' if grows < 5 else f'grew {grows:.1f} MB'}")  # fmt: skip
    print(json.dumps(r))


if __name__ == "__main__":
    main()
