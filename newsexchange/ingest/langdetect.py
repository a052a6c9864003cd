"""Which language an item is written in, to check the language a source declares.

py3langid ships its model inside the wheel (no download, no network). The model knows 97
languages; restricting it to the ones that plausibly turn up in a Finnish–Russian border
exchange makes short texts far less likely to come out as something exotic (a Finnish
headline read as Estonian is a real risk; one read as Basque is just noise).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

#: Languages the detector may answer with.
LANGUAGES: tuple[str, ...] = (
    "fi", "ru", "en", "sv", "et", "de", "uk", "be", "no", "da", "fr", "es", "it", "pl",
    "lv", "lt",
)  # fmt: skip
#: Below this many letters a text is too short to tell (a name, "Petroskoi", "Ошибка");
#: py3langid's answers on 10–15 letters are right only about half the time.
MIN_LETTERS = 20
#: Only the first this many characters are read: enough to tell a language, and the
#: model's cost grows with length (about 60 µs + 0.15 µs per character).
MAX_CHARS = 200
_UK_BE_LETTERS = frozenset("іїєґўІЇЄҐЎ")
#: The Cyrillic block's letters (U+0400–U+04FF less the non-letters U+0482–U+0489: ҂ and the
#: combining titlo marks), so one C-level findall counts what ``isalpha()`` would.
_CYRILLIC_LETTER = re.compile("[\u0400-\u0481\u048a-\u04ff]")
#: Below this normalized probability the answer is a guess; report None instead.
MIN_CONFIDENCE = 0.6

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _identifier() -> Any:
    # Loading the model takes about a second; do it once, on first use, in one thread.
    with _lock:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        ident.set_languages(list(LANGUAGES))
        return ident


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the language of ``text`` ("fi", "ru", "en" …), or None when the
    text has fewer than MIN_LETTERS letters or the detector is less than MIN_CONFIDENCE
    sure."""
    if not text:
        return None
    text = text[:MAX_CHARS]
    if len(text) < MIN_LETTERS:
        return None
    # Counted with C loops (map, findall) rather than a per-character Python loop: the
    # counts are the same, at a fraction of the cost on every item.
    letters = sum(map(str.isalpha, text))
    if letters < MIN_LETTERS:
        return None
    cyrillic = len(_CYRILLIC_LETTER.findall(text))
    if cyrillic * 10 >= letters * 9 and not _UK_BE_LETTERS.intersection(text):
        # Cyrillic without the letters only Ukrainian/Belarusian have (і ї є ґ ў): among
        # the languages above that is Russian. Saves the model's ~100 µs on every Russian
        # item, which matters at 30 items × 1,000 feeds.
        return "ru"
    # classify() keeps no state between calls (py3langid 0.4), so threads may share it.
    lang, prob = _identifier().classify(text)
    return str(lang) if float(prob) >= MIN_CONFIDENCE else None
