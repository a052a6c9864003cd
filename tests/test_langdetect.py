"""Language detection's shortcuts give the model's answers: the letter counts done in C over
the UTF-8 bytes equal ``str.isalpha`` counted character by character, and the identifier read
without the full 97-language model holds exactly the arrays of py3langid's own loader
restricted to the same languages, so it scores every text bit for bit the same."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from newsexchange.errors import FetchError
from newsexchange.ingest import langdetect
from newsexchange.ingest.langdetect import _CYRILLIC_LETTER, _letters_and_cyrillic
from newsexchange.ingest.parse import parse_feed
from tests.conftest import CORPUS

SENTENCES = [
    "Joensuun kaupunginvaltuusto hyväksyi maanantaina ensi vuoden talousarvion.",
    "Глава Карелии встретился с жителями Кондопоги — «мост откроют в 2027 году».",
    "Лист №5: ґанок, їжак, єнот і ўсё — украинские и белорусские буквы.",
    "Skärgårdens färja går åter enligt tidtabell från måndag.",
    "Straße, Größe, Übung: ẞ and ß; ½ cup, ² squared, Ⅻ o'clock, 一 二 三, café naïve.",
    "҂ titlo ҃ ҄ ҅ ҆ ҇ ҈ ҉ Ѐ ѐ Ӿ ӿ Ԁ ԁ",
    "snake_case_name 12345 ٣٤٥ ０１２ \u0300\u0301 ‏‎ \t\n",
    "The regional council approved the budget on Monday after a long debate.",
]


def _texts() -> list[str]:
    rng = random.Random(16)
    alphabet = "".join(SENTENCES) + "\ud800\udfff\U0001f600"
    texts = list(SENTENCES)
    for _ in range(3000):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 240))))
    words = " ".join(SENTENCES).split()
    for _ in range(2000):
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 45))))
    if CORPUS.is_dir():  # the corpus's real titles and summaries, where it is at hand
        for path in sorted(p for p in CORPUS.rglob("*.xml") if p.is_file())[:400]:
            try:
                feed = parse_feed(path.read_bytes(), url="http://127.0.0.1/feed")
            except FetchError:
                continue
            texts += [f"{e.title}. {e.summary_text}" for e in feed.entries]
    return texts


TEXTS = _texts()


def test_letters_and_cyrillic_count_what_isalpha_and_the_cyrillic_pattern_count() -> None:
    for text in TEXTS:
        text = text[: langdetect.MAX_CHARS]
        expected = (sum(map(str.isalpha, text)), len(_CYRILLIC_LETTER.findall(text)))
        assert _letters_and_cyrillic(text) == expected, text


def test_the_compact_identifier_is_py3langids_own_restricted_to_the_same_languages() -> None:
    import numpy as np
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    own = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    own.set_languages(list(langdetect.LANGUAGES))
    compact = langdetect._compact_identifier()
    assert compact.nb_classes == own.nb_classes
    assert compact.nb_ptc.dtype == own.nb_ptc.dtype and np.array_equal(compact.nb_ptc, own.nb_ptc)
    assert compact.nb_pc.dtype == own.nb_pc.dtype and np.array_equal(compact.nb_pc, own.nb_pc)
    assert compact.tk_nextmove == own.tk_nextmove
    assert compact.tk_row == own.tk_row
    assert compact.tk_output == own.tk_output
    for text in TEXTS[:3000]:
        text = text[: langdetect.MAX_CHARS]
        assert compact._decide(text).tobytes() == own._decide(text).tobytes(), text


@pytest.mark.parametrize(
    ("text", "lang"),
    [(SENTENCES[0], "fi"), (SENTENCES[1], "ru"), (SENTENCES[3], "sv"), (SENTENCES[7], "en")],
)
def test_detect_language_still_answers(text: str, lang: str) -> None:
    assert langdetect.detect_language(text) == lang


def test_the_model_is_loaded_only_when_a_text_needs_it() -> None:
    # (py3langid the module may be imported by others, trafilatura; its model is the cost.)
    code = (
        "from newsexchange.ingest import langdetect\n"
        "loaded = lambda: langdetect._identifier.cache_info().currsize == 1\n"
        "assert not loaded()\n"
        "assert langdetect.detect_language('Глава Карелии встретился с жителями Кондопоги') == 'ru'\n"
        "assert not loaded(), 'Russian is settled by its script'\n"
        "assert langdetect.detect_language('Joensuun valtuusto hyväksyi talousarvion') == 'fi'\n"
        "assert loaded()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
