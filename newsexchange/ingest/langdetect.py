"""Which language an item is written in, to check the language a source declares.

py3langid ships its model inside the wheel (no download, no network). The model knows 97
languages; restricting it to the ones that plausibly turn up in a Finnish–Russian border
exchange makes short texts far less likely to come out as something exotic (a Finnish
headline read as Estonian is a real risk; one read as Basque is just noise).

The model is loaded on the first text that needs it (a Russian text never does, see
:func:`detect_language`), and only the restricted model is ever held: ~50 MB at the peak
instead of py3langid's own loader's ~100 MB (:func:`_compact_identifier`).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

import numpy as np  # comes with py3langid; imported at the top, as stories.py does

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
#: The letters only Ukrainian and Belarusian have among the languages above.
_UK_BE_LETTER = re.compile("[іїєґўІЇЄҐЎ]")
#: The Cyrillic block's letters (U+0400–U+04FF less the non-letters U+0482–U+0489: ҂ and the
#: combining titlo marks): the letters that make a text Russian below.
_CYRILLIC_LETTER = re.compile("[\u0400-\u0481\u048a-\u04ff]")
_CYRILLIC_NON_LETTER = re.compile("[\u0482-\u0489]")
#: Characters neither ASCII nor in the Cyrillic block (ä, ö, «, —, №, …): few in a text, so
#: isalpha() is asked of them one by one.
_OTHER = re.compile("[^\x00-\x7f\u0400-\u04ff]")
#: For bytes.translate on a text's UTF-8: every byte but the ASCII letters (so what is left
#: counts the ASCII letters) and every byte but the lead bytes of U+0400–U+04FF, D0–D3 (so
#: what is left counts the Cyrillic block's characters, two bytes each).
_NOT_ASCII_LETTER = bytes(b for b in range(256) if not (b < 128 and chr(b).isalpha()))
_NOT_CYRILLIC_LEAD = bytes(b for b in range(256) if not 0xD0 <= b <= 0xD3)


def _letters_and_cyrillic(text: str) -> tuple[int, int]:
    """How many characters of ``text`` are letters (``str.isalpha``) and how many of those
    are Cyrillic-block letters, counted in C over the UTF-8 bytes.

    The characters split three ways: ASCII (one byte each, its letters counted by
    translate), the Cyrillic block U+0400–U+04FF (two bytes led by D0–D3, all letters but
    U+0482–U+0489) and the rest, asked one by one: the same counts as
    ``sum(map(str.isalpha, text))`` and a findall of :data:`_CYRILLIC_LETTER`, at a
    fraction of the cost (tests/test_langdetect.py checks both on the corpus)."""
    raw = text.encode("utf-8", "surrogatepass")
    ascii_letters = len(raw.translate(None, _NOT_ASCII_LETTER))
    cyrillic = len(raw.translate(None, _NOT_CYRILLIC_LEAD))
    if cyrillic and _CYRILLIC_NON_LETTER.search(text):
        cyrillic -= len(_CYRILLIC_NON_LETTER.findall(text))
    others = _OTHER.findall(text)
    return ascii_letters + cyrillic + sum(map(str.isalpha, others)), cyrillic


#: Below this normalized probability the answer is a guess; report None instead.
MIN_CONFIDENCE = 0.6

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _identifier() -> Any:
    # Loading the model takes about a second; do it once, on first use, in one thread.
    with _lock:
        try:
            return _compact_identifier()
        except Exception:  # another py3langid model layout: its own loader, then restricted
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            ident.set_languages(list(LANGUAGES))
            return ident


def _compact_identifier() -> Any:
    """py3langid's identifier restricted to :data:`LANGUAGES`, read so that the full model
    is never held: its own loader keeps the 97-language table (28 MB) beside the restricted
    one and holds the automaton twice while converting it, ~100 MB at the peak. Here the
    automaton is read straight into its ``array`` and only the 16 languages' columns of the
    table are kept: ~45 MB resident. Same arrays, same answers (tests/test_langdetect.py)."""
    import lzma
    import shutil
    import tempfile
    import zipfile
    from array import array

    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    with tempfile.TemporaryFile(suffix=".npz") as tmp:
        with lzma.open(MODEL_DIR / MODEL_FILE) as src:
            shutil.copyfileobj(src, tmp, length=1 << 20)
        tmp.seek(0)
        with zipfile.ZipFile(tmp) as npz:

            def as_array(name: str) -> array[int]:
                # An unsigned .npy member read into array('H'/'I'/'L') without numpy's copy.
                with npz.open(f"{name}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran, dtype = header(f)
                    out = array({2: "H", 4: "I", 8: "L"}[dtype.itemsize])
                    if (
                        fortran
                        or dtype.kind != "u"
                        or dtype.byteorder == ">"
                        or out.itemsize != dtype.itemsize
                    ):
                        raise ValueError(f"unexpected {name} layout {dtype}")
                    left = int(np.prod(shape))
                    while left:  # in 1 MB steps: one read of it all would hold it twice
                        step = min(left, (1 << 20) // out.itemsize)
                        out.fromfile(f, step)  # type: ignore[arg-type]
                        left -= step
                    return out

            with np.load(tmp, allow_pickle=False) as data:
                if "ptc" not in data.files or "nextmove_row" not in data.files:
                    raise ValueError("unknown py3langid model layout")
                classes = data["classes"].tolist()
                keep = [i for i, c in enumerate(classes) if c in set(LANGUAGES)]
                ptc = np.ascontiguousarray(data["ptc"][:, keep])
                pc = data["pc"][keep]
                output = data["out_feat"].tolist()
            nextmove = as_array("nextmove")
            row = as_array("nextmove_row")
    return LanguageIdentifier(
        ptc, pc, [classes[i] for i in keep], nextmove, output, norm_probs=True, tk_row=row
    )


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the language of ``text`` ("fi", "ru", "en" …), or None when the
    text has fewer than MIN_LETTERS letters or the detector is less than MIN_CONFIDENCE
    sure."""
    if not text:
        return None
    text = text[:MAX_CHARS]
    if len(text) < MIN_LETTERS:
        return None
    # Counted in C over the UTF-8 bytes, not character by character: the same counts at
    # about a tenth of the cost (4 instead of 40 µs on a Russian item).
    letters, cyrillic = _letters_and_cyrillic(text)
    if letters < MIN_LETTERS:
        return None
    if cyrillic * 10 >= letters * 9 and not _UK_BE_LETTER.search(text):
        # Cyrillic without the letters only Ukrainian/Belarusian have (і ї є ґ ў): among
        # the languages above that is Russian. Saves the model's ~100 µs on every Russian
        # item, which matters at 30 items × 1,000 feeds.
        return "ru"
    # classify() keeps no state between calls (py3langid 0.4), so threads may share it.
    lang, prob = _identifier().classify(text)
    return str(lang) if float(prob) >= MIN_CONFIDENCE else None
