"""Jinja2 for web pages and emails: autoescape on, templates under ``newsexchange/templates``
(``email/`` and ``web/``), shipped inside the package; one environment per language, with its
gettext catalogue (:mod:`newsexchange.i18n`), and ``lang`` a global of each."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from newsexchange.i18n import SOURCE_LANGUAGE, lang_of, translations

TEMPLATES = Path(__file__).resolve().parent / "templates"


def environment(language: str | None = None) -> Environment:
    """The environment for pages and mails in ``language`` (its gettext catalogue installed,
    :mod:`newsexchange.i18n`); without a language, the English source texts."""
    return _environment(lang_of(language) if language else None)


@lru_cache(maxsize=4)
def _environment(lang: str | None) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "xml", "htm"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    if lang is None:
        env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    else:
        env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals["lang"] = lang or SOURCE_LANGUAGE
    return env
