"""Text features that survive translation and retelling (pure: stdlib only).

A retelling in Petrozavodsk of a Joensuu story keeps little of the wording but keeps the
facts: the numbers (amounts, years, percentages, counts), the dates, the names of people,
organisations and places. Those are written differently in each script (``Hämäläinen``,
``Хямяляйнен``, ``Hämäläisen``), so each is reduced to a *key* that the spellings share:

- a name's key is its consonant skeleton after transliteration to Latin (vowels, ``j`` and
  doubled letters dropped), cut to three consonants, because Russian inflects names at the end
  (``Смирнова``, ``Смирновой``) and Finnish even inside (``Virtanen``, ``Virtasen``);
- a place is looked up in a small gazetteer of the exchange's region, since exonyms share no
  letters (``Petroskoi`` is ``Петрозаводск``);
- a number is its value in one canonical spelling (``1 200``, ``1,200``, ``1200`` → ``1200``;
  ``2,5`` and ``2.5`` → ``2.5``); a date is ``MM-DD`` from ``12 марта``, ``12. maaliskuuta``,
  ``March 12`` or ``12.3.``.

Word similarity in one language uses crude stems: the first five letters of each word that
is not a stop word (Russian and Finnish inflect heavily; a prefix is a stemmer that needs no
model and no dictionary).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Features",
    "date_keys",
    "extract",
    "fold",
    "name_key",
    "number_keys",
    "place_key",
    "sentences",
    "stems",
    "transliterate",
]

_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "z", "з": "z",
    "и": "i", "й": "j", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "c", "ч": "c", "ш": "s", "щ": "s",
    "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "ju", "я": "ja", "і": "i", "є": "e",
}  # fmt: skip
_LATIN = {"ä": "a", "ö": "o", "å": "a", "é": "e", "è": "e", "ü": "u", "š": "s", "ž": "z",
          "č": "c", "w": "v", "q": "k", "x": "ks", "õ": "o"}  # fmt: skip
# English and Finnish transliterations of Russian spell one Cyrillic letter with two
# (Kostomuksha, Kostomukša, Zhukov, Khabarov, Tsar): fold them to the single letter above.
_DIGRAPHS = (("shch", "s"), ("sch", "s"), ("zh", "z"), ("kh", "h"), ("ch", "c"), ("sh", "s"),
             ("ts", "c"), ("yu", "ju"), ("ya", "ja"), ("iu", "ju"), ("ia", "ja"))  # fmt: skip
_VOWELS = frozenset("aeiouy")


def transliterate(word: str) -> str:
    """``word`` in lower-case Latin letters: Cyrillic letters by a fixed table, accents dropped."""
    out = []
    for ch in word.lower():
        out.append(_CYRILLIC.get(ch, _LATIN.get(ch, ch)))
    return "".join(out)


def fold(word: str) -> str:
    """The spelling of ``word`` that its Finnish, Russian and English forms share (``a``–``z``)."""
    s = transliterate(word)
    for a, b in _DIGRAPHS:
        s = s.replace(a, b)
    return re.sub(r"[^a-z]", "", s)


def _skeleton(folded: str) -> str:
    out: list[str] = []
    for ch in folded:
        if ch in _VOWELS or ch == "j":
            continue
        if out and out[-1] == ch:
            continue
        out.append(ch)
    return "".join(out)


def name_key(word: str) -> str:
    """A key that ``Hämäläinen``, ``Hämäläisen`` and ``Хямяляйнена`` share.

    Three consonants of the skeleton, because the endings inflect; a word with fewer consonants
    keeps its first five folded letters instead (``Irina``/``Irinan``/``Ирины`` → ``irin``…).
    A leading vowel is kept, so ``Olga`` is not ``Lagus``."""
    f = fold(word)
    if not f:
        return ""
    sk = _skeleton(f)
    if len(sk) < 3:
        return f[:5] if len(f) >= 5 else f
    lead = f[0] if f[0] in _VOWELS or f[0] == "j" else ""
    return lead + sk[:3]


# The region's places by canonical key, each with the folded prefixes its Finnish, Russian and
# English spellings (and their inflected forms) start with. Exonyms share no letters, so no
# transliteration finds them; the list is short on purpose — a place is weak evidence anyway.
_PLACES: dict[str, tuple[str, ...]] = {
    "joensuu": ("joensu", "joens"),
    "petrozavodsk": ("petrozavod", "petrosko"),
    "karelia": ("karel", "karjal"),
    "finland": ("finlan", "finljand", "suome", "suomi"),
    "russia": ("rossi", "russia", "venaj"),
    "sortavala": ("sortaval",),
    "kostomuksha": ("kostomuks", "kostamu"),
    "kuopio": ("kuopio",),
    "helsinki": ("helsin", "helsink"),
    "lieksa": ("lieks", "lieksa"),
    "nurmes": ("nurmes",),
    "kitee": ("kitee", "kiteel", "kiteen"),
    "kontiolahti": ("kontiolah",),
    "ilomantsi": ("ilomanc", "ilomans"),
    "outokumpu": ("outokum",),
    "niirala": ("niiral",),
    "vartsila": ("vartsil", "varcil"),
    "medvezhyegorsk": ("medvezegor", "medvezjegor", "medvezegorsk", "karhumae", "karhumak"),
    "kondopoga": ("kondopog", "kontupohj"),
    "segezha": ("segez",),
    "olonets": ("olonec", "olonc", "aunukse", "aunus"),
    "pitkyaranta": ("pitkjarant", "pitkarant", "pitkyarant"),
    "onega": ("onez", "onega", "aanine", "aanis"),
    "ladoga": ("ladog", "laatok"),
    "pielinen": ("pielin", "pielis"),
    "koli": ("koli", "kolin", "kolill"),
    "kizhi": ("kizi", "kiz"),
    "saint_petersburg": ("peterburg", "pietar", "petersburg"),
    "moscow": ("moskv", "moscow", "moskov"),
    "europe": ("evrop", "europ", "euroop"),
    "kalevala": ("kalevals", "kalevalsk"),
    "murmansk": ("murmans",),
    "arkhangelsk": ("arhangel", "arkangel"),
    "belomorsk": ("belomors", "sorokk"),
    "pudozh": ("pudoz",),
    "kem": ("kemi", "kemsk"),
    "valaam": ("valaam", "valamo"),
    "vyborg": ("vyborg", "viipur"),
    "oulu": ("oulu", "oulun", "oulus"),
    "kuhmo": ("kuhmo", "kuhmol"),
    "imatra": ("imatr",),
    "lappeenranta": ("lappeenrant",),
    "savonlinna": ("savonlinn",),
    "tampere": ("tamper", "tamppe"),
    "turku": ("turku", "turun", "turus"),
}
_PLACE_PREFIXES = sorted(
    ((p, key) for key, ps in _PLACES.items() for p in ps), key=lambda t: -len(t[0])
)


def place_key(word: str) -> str | None:
    """The gazetteer key of ``word`` (any script, any case ending), or ``None``."""
    f = fold(word)
    for prefix, key in _PLACE_PREFIXES:
        if f.startswith(prefix) and len(f) - len(prefix) <= 9:
            return key
    return None


# ------------------------------------------------------------------------------- numbers/dates

_MONTHS: dict[str, int] = {}
for _n, _names in enumerate(
    (
        ("январ", "tammikuu", "january", "jan"),
        ("феврал", "helmikuu", "february", "feb"),
        ("март", "марта", "maaliskuu", "march", "mar"),
        ("апрел", "huhtikuu", "april", "apr"),
        ("мая", "май", "toukokuu", "may"),
        ("июн", "kesäkuu", "june", "jun"),
        ("июл", "heinäkuu", "july", "jul"),
        ("август", "elokuu", "august", "aug"),
        ("сентябр", "syyskuu", "september", "sep", "sept"),
        ("октябр", "lokakuu", "october", "oct"),
        ("ноябр", "marraskuu", "november", "nov"),
        ("декабр", "joulukuu", "december", "dec"),
    ),
    start=1,
):
    for _m in _names:
        _MONTHS[_m] = _n


def _month(word: str) -> int | None:
    w = word.lower().rstrip(".")
    if w in _MONTHS:
        return _MONTHS[w]
    for stem, n in _MONTHS.items():
        if len(stem) >= 4 and w.startswith(stem) and len(w) - len(stem) <= 4:
            return n
    return None


_NUMERIC_DATE = re.compile(r"\b(\d{1,2})\.(\d{1,2})\.(?:(\d{4})\b)?")
_DAY_MONTH = re.compile(r"\b(\d{1,2})\.?\s+([^\W\d_]{3,})")
_MONTH_DAY = re.compile(r"\b([A-Z][a-z]{2,8})\.?\s+(\d{1,2})\b")
_NUMBER = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:[ \u00a0\u202f]\d{3})+|\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:[.,](\d+))?"
)


def date_keys(text: str) -> tuple[set[str], str]:
    """The dates in ``text`` as ``MM-DD`` keys, and ``text`` with them blanked out.

    Blanked, so that the day of ``12 марта`` is not also counted as the number 12."""
    found: set[str] = set()

    def numeric(m: re.Match[str]) -> str:
        day, month = int(m.group(1)), int(m.group(2))
        if 1 <= day <= 31 and 1 <= month <= 12:
            found.add(f"{month:02d}-{day:02d}")
            return " " + (m.group(3) or "") + " "
        return m.group(0)

    def day_month(m: re.Match[str]) -> str:
        month = _month(m.group(2))
        day = int(m.group(1))
        if month and 1 <= day <= 31:
            found.add(f"{month:02d}-{day:02d}")
            return " " + m.group(2)
        return m.group(0)

    def month_day(m: re.Match[str]) -> str:
        month = _month(m.group(1))
        day = int(m.group(2))
        if month and 1 <= day <= 31:
            found.add(f"{month:02d}-{day:02d}")
            return m.group(1) + " "
        return m.group(0)

    text = _NUMERIC_DATE.sub(numeric, text)
    text = _DAY_MONTH.sub(day_month, text)
    text = _MONTH_DAY.sub(month_day, text)
    return found, text


def number_keys(text: str) -> set[str]:
    """The numbers in ``text``, canonical: ``1 200``/``1,200``/``1200`` → ``1200``, ``2,5`` → ``2.5``.

    A comma before exactly three digits groups thousands (English); before other digits it is
    the decimal comma (Finnish, Russian). Dates should be taken out first (:func:`date_keys`)."""
    out: set[str] = set()
    for m in _NUMBER.finditer(text):
        whole = re.sub(r"[ \u00a0\u202f,]", "", m.group(1))
        frac = (m.group(2) or "").rstrip("0")
        value = whole.lstrip("0") or "0"
        out.add(f"{value}.{frac}" if frac else value)
    return out


def is_year(key: str) -> bool:
    """A four-digit number that reads as a year of this era."""
    return key.isdigit() and 1900 <= int(key) <= 2100


def number_weight(key: str) -> float:
    """How much one shared number tells: a year or a one-digit count little, ``1.2`` or ``340`` much."""
    if is_year(key):
        return 0.5
    if key.isdigit() and int(key) < 10:
        return 0.3
    return 1.0


# ------------------------------------------------------------------------------------ words

_STOP = frozenset(
    """
    и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее
    мне было вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был
    него до вас нибудь опять уж вам ведь там потом себя ничего ей может они тут где есть надо ней
    для мы тебя их чем была сам чтоб без будто чего раз тоже себе под будет ж тогда кто этот того
    потому этого какой совсем ним здесь этом один почти мой тем чтобы нее сейчас были куда зачем
    всех никогда можно при наконец два об другой хоть после над больше тот через эти нас про
    всего них какая много разве три эту моя впрочем хорошо свою этой перед иногда лучше чуть том
    нельзя такой им более всегда конечно всю между это также года году лет который которые
    которая которых сообщает сообщил сказал говорит рассказал отметил словам
    ja on ei se että oli ovat olla hän mutta tai kun jos niin myös nyt vain sen kuin joka jotka
    mitä siitä ole olisi sekä ovat kanssa mukaan koska sitten vielä jo tämä tämän nämä ne hänen
    heidän meidän olemme olivat ollut on ovat sanoo kertoo kertoi sanoi mukaan vuonna vuoden noin
    the a an and or of to in on at for with by from is are was were be been has have had it its
    this that these those as not but also will would can could said says after before than
    more their they he she his her we our you your which who about into over new year years
    """.split()  # noqa: SIM905 — a word list reads better as text
)
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\s»”\"]+(?=[«“\"„A-ZА-ЯЁÄÖÅ—–-])")


# Stems of the words every news item uses to report (said, told, according to, director):
# no evidence of one story, whatever their ending.
_STOP_STEMS = frozenset(
    """
    расск сообщ говор отмет замет добав подче увере объяс заяви по-ег словам
    kerto sanoo sanoi totea lisää kommen mukaa
    comme state added told accor
    """.split()  # noqa: SIM905
)


def stems(text: str) -> set[str]:
    """Crude stems of the content words: the first five letters, ``ё`` as ``е``."""
    out = set()
    for w in _WORD.findall(text):
        w = w.lower().replace("ё", "е")
        if len(w) < 4 or w in _STOP:
            continue
        if w[:5] not in _STOP_STEMS:
            out.add(w[:5])
    return out


def sentences(title: str, summary: str) -> list[str]:
    """The headline and each sentence of the summary."""
    parts = [title.strip()] if title.strip() else []
    parts += [s.strip() for s in _SENTENCE_END.split(summary) if len(s.strip()) > 3]
    return parts


_INITIAL = frozenset('.!?…:«“„"—–-(')


# Words English capitalizes in names of things that are no evidence of one story ("North
# Karelia", "World Cup", "City Council"), and abbreviations that name a kind of thing, not one.
_GENERIC = frozenset(
    """
    north south east west central eastern western northern southern world cup university city
    day lake national state regional council government ministry museum theatre theater
    hospital park league international european first new old great saint st
    кпп мчс ес гэс гок
    """.split()  # noqa: SIM905
)


# The same in Russian, where the adjectives inflect: "Университет Восточной Финляндии".
_GENERIC_PREFIXES = ("восточн", "северн", "западн", "южн", "центральн", "национальн",
                     "государствен", "университет", "международн", "российск")  # fmt: skip


def _generic(word: str) -> bool:
    w = word.lower()
    return w in _GENERIC or w.startswith(_GENERIC_PREFIXES)


def capitalized(text: str) -> list[tuple[str, int, int]]:
    """Words written with a capital that is not there because a sentence starts, with their span.

    A sentence-initial word counts too if it is a known place or is capitalized again further
    on in ``text``; an all-capitals abbreviation always counts."""
    found: list[tuple[str, int, int, bool]] = []
    for m in _WORD.finditer(text):
        w = m.group(0)
        if not w[0].isupper():
            continue
        before = text[: m.start()].rstrip()
        initial = not before or before[-1] in _INITIAL
        found.append((w, m.start(), m.end(), initial))
    inner = {w.lower() for w, _, _, initial in found if not initial}
    out = []
    for w, start, end, initial in found:
        known_place = place_key(w) is not None and w.lower() not in _STOP
        if not initial or (w.isupper() and len(w) > 1) or w.lower() in inner or known_place:
            out.append((w, start, end))
    return out


@dataclass
class Features:
    """What one text offers for matching, every part keyed to survive translation."""

    names: dict[str, str] = field(default_factory=dict)  # key → a spelling, for the evidence
    # The names written next to each other (``Maksim Kondratjev``, ``День Калевалы``): one
    # person or thing, so one piece of evidence however many of its words are shared.
    name_groups: list[frozenset[str]] = field(default_factory=list)
    places: dict[str, str] = field(default_factory=dict)
    numbers: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    stems: set[str] = field(default_factory=set)
    sentences: list[tuple[str, frozenset[str]]] = field(default_factory=list)


def extract(title: str, summary: str) -> Features:
    """The features of a headline and its summary."""
    f = Features()
    text = f"{title}.\n{summary}"
    f.dates, rest = date_keys(text)
    f.numbers = number_keys(rest)
    group: list[str] = []
    last_end = -10
    for w, start, end in capitalized(text):
        if group and text[last_end:start].strip(" -\u00a0") != "":
            f.name_groups.append(frozenset(group))
            group = []
        last_end = end
        place = place_key(w)
        if place is not None:
            f.places.setdefault(place, w)
            continue
        if w.lower() in _STOP or _generic(w) or _month(w) is not None or len(w) < 3:
            continue
        key = name_key(w)
        if len(key) >= 3:
            f.names.setdefault(key, w)
            group.append(key)
    if group:
        f.name_groups.append(frozenset(group))
    # The wording is compared without the names and places: they count once, as names and
    # places — else "director Elena Bogdanova said" on another subject looks like the same text.
    proper = stems(" ".join(w for w, _, _ in capitalized(text)))
    f.sentences = [(s, frozenset(stems(s) - proper)) for s in sentences(title, summary)]
    f.stems = set().union(*(s for _, s in f.sentences)) if f.sentences else set()
    return f
