"""The editors' and readers' own language: gettext catalogues through babel, fi, ru and en.

Every text a person reads in the interface (approval mails, review and status pages, notices,
the archive) is written in English in the code and the templates and marked for translation:
``{% trans %}…{% endtrans %}`` or ``_("…")`` in a template; in Python
``_ = gettext_for(lang)`` then ``_("…")`` (and ``ngettext = ngettext_for(lang)``), the names
``pybabel extract`` looks for. The catalogues are
``newsexchange/locale/<lang>/LC_MESSAGES/messages.po``; English is the source language, so
its catalogue may leave a message untranslated and the English text shows.

The ``.po`` files are the only form kept in the repository: they are compiled in memory the
first time a language is used (a few milliseconds), so a compiled ``.mo`` can never be stale.
``scripts/update-catalogues`` extracts the marked messages (``pybabel extract``) and merges
them into every catalogue; ``tests/test_i18n.py`` fails while a Finnish or Russian message is
missing, fuzzy or has other placeholders than its English original.

Templates are rendered with :func:`environment` for the reader's language: one Jinja
environment per language, each with its catalogue installed, so pages for editors of
different languages can be rendered at the same time in different threads.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

Lang = Literal["fi", "ru", "en"]
LANGUAGES: tuple[Lang, ...] = ("fi", "ru", "en")
SOURCE_LANGUAGE: Lang = "en"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"


def catalogue_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def lang_of(language: str | None) -> Lang:
    """One of :data:`LANGUAGES` for a language tag (``ru``, ``ru-RU``, ``FI``); English for
    anything else (the source language is always complete)."""
    tag = (language or "").strip().lower().replace("_", "-").split("-")[0]
    return tag if tag in LANGUAGES else SOURCE_LANGUAGE


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str | None) -> NullTranslations:
    """The compiled catalogue of ``language`` (see :func:`lang_of`)."""
    lang = lang_of(language)
    path = catalogue_path(lang)
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


class Gettext(Protocol):
    def __call__(self, message: str, /, **values: object) -> str: ...


class NGettext(Protocol):
    def __call__(self, singular: str, plural: str, n: int, /, **values: object) -> str: ...


def gettext_for(language: str | None) -> Gettext:
    """``_`` for ``language``: ``_("Digest %(id)s", id=5)`` gives the translation with its
    ``%(name)s`` placeholders filled. Bind it as ``_`` so that ``pybabel extract`` finds the
    messages."""
    t = translations(language)

    def _(message: str, /, **values: object) -> str:
        text = t.gettext(message)
        return text % values if values else text

    return _


def ngettext_for(language: str | None) -> NGettext:
    """``ngettext`` for ``language``: the plural form for ``n`` by the catalogue's CLDR rule;
    ``%(num)s`` is ``n`` unless given."""
    t = translations(language)

    def ngettext(singular: str, plural: str, n: int, /, **values: object) -> str:
        return t.ngettext(singular, plural, n) % {"num": n, **values}

    return ngettext
