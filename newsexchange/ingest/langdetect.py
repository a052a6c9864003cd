"""Which language an item is written in, to check the language a source declares.

py3langid ships its model inside the wheel (no download, no network). The model knows 97
languages; restricting it to the ones that plausibly turn up in a Finnish–Russian border
exchange makes short texts far less likely to come out as something exotic (a Finnish
headline read as Estonian is a real risk; one read as Basque is just noise).
"""

from __future__ import annotations

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
    if not text or sum(1 for ch in text if ch.isalpha()) < MIN_LETTERS:
        return None
    # classify() keeps no state between calls (py3langid 0.4), so threads may share it.
    lang, prob = _identifier().classify(text[:2000])
    return str(lang) if float(prob) >= MIN_CONFIDENCE else None
