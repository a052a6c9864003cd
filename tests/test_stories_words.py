"""The fingerprint's word splitter finds exactly the words of its reference pattern
(``_WORD.findall``), the fast way (``\\w+`` runs) or the careful one (runs holding digits,
"_" or numerals other than digits)."""

from __future__ import annotations

import random

from newsexchange.ingest.stories import _WORD, LEAD_WORDS, _words

SAMPLES = [
    "Joensuun kaupunginvaltuusto hyväksyi maanantaina ensi vuoden talousarvion.",
    "Глава Карелии встретился с жителями Кондопоги — «мост откроют в 2027 году».",
    "snake_case x² ½-kilo Ⅻ 3D-tulostin 2026 İstanbul ǅemal Ёлка ёлка 一二三 ١٢٣ ０１",
    "",
    "2026 — 18:00",
]


def test_words_are_the_reference_patterns_matches() -> None:
    rng = random.Random(16)
    alphabet = "".join(SAMPLES) + " \n\t_-"
    texts = list(SAMPLES)
    texts += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 900))) for _ in range(3000)
    ]
    words = " ".join(SAMPLES).split()
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(0, 150))) for _ in range(3000)]
    for text in texts:
        for limit in (LEAD_WORDS, 100):
            assert _words(text, limit) == _WORD.findall(text, 0, 20 * limit)[:limit], text
