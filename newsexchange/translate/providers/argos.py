"""Argos Translate, offline, when its fi/ru/en packages are installed (optional extra
``argos``; imported lazily because it pulls in torch/CTranslate2). A pair without a package of
its own goes through English (fi→en→ru), as LibreTranslate itself does."""

from __future__ import annotations

from typing import Any

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import Format, provider_error

__all__ = ["ArgosTranslator"]

MAX_CHARS = 2000


class ArgosTranslator:
    max_texts = 50
    resends_per_text = False

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = "argos"
        self.settings: ProviderSettings | None = settings
        self.max_chars = settings.max_chars or MAX_CHARS
        self.timeout = settings.timeout
        self.requests_made = 0

    def close(self) -> None:
        pass

    def _translation(self, source: str, target: str) -> Any:
        try:
            import argostranslate.translate as argos
        except ImportError:
            raise provider_error(
                self.name,
                "unsupported",
                "argostranslate is not installed (pip install 'newsexchange[argos]'; see "
                "docs/translation.md for the fi/ru/en packages)",
            ) from None
        langs = {lang.code: lang for lang in argos.get_installed_languages()}
        if source not in langs or target not in langs:
            raise provider_error(
                self.name,
                "unsupported",
                f"no Argos package for {source}→{target} (installed: {', '.join(sorted(langs))})",
            )
        direct = langs[source].get_translation(langs[target])
        if direct is not None:
            return direct
        if "en" in langs:
            first = langs[source].get_translation(langs["en"])
            second = langs["en"].get_translation(langs[target])
            if first is not None and second is not None:
                return _Pivot(first, second)
        raise provider_error(
            self.name, "unsupported", f"no Argos package for {source}→{target}, nor via English"
        )

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        tr = self._translation(source, target)
        self.requests_made += 1
        return [str(tr.translate(t)) for t in texts]


class _Pivot:
    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def translate(self, text: str) -> str:
        return str(self.second.translate(self.first.translate(text)))
