"""The configured chain of providers, in the order of ``translation.providers``."""

from __future__ import annotations

from newsexchange.config import Config, ProviderSettings
from newsexchange.translate.providers.argos import ArgosTranslator
from newsexchange.translate.providers.bounded import BoundedTranslator
from newsexchange.translate.providers.deepl import DeeplTranslator
from newsexchange.translate.providers.google import GoogleTranslator
from newsexchange.translate.providers.http import HTTPProvider
from newsexchange.translate.providers.libre import LibreTranslator
from newsexchange.translate.providers.microsoft import MicrosoftTranslator
from newsexchange.translate.providers.mymemory import MyMemoryTranslator

__all__ = ["build_translators"]

_KEYED = {
    "libre": LibreTranslator,
    "google": GoogleTranslator,
    "deepl": DeeplTranslator,
    "microsoft": MicrosoftTranslator,
    "mymemory": MyMemoryTranslator,
}


def _provider(settings: ProviderSettings, key: str | None) -> ArgosTranslator | HTTPProvider:
    if settings.name == "argos":
        return ArgosTranslator(settings)
    return _KEYED[settings.name](settings, key)


def build_translators(config: Config) -> list[BoundedTranslator]:
    """The configured chain, in order. Keys come from the environment variables named in the
    file; a missing key is reported when the provider is tried, not here, so the rest of the
    chain still runs. A second provider of the same kind (two LibreTranslate servers) is named
    ``libre-2`` in reports and usage, so each has its own limits and health."""
    out: list[BoundedTranslator] = []
    seen: dict[str, int] = {}
    for p in config.translation.providers:
        inner = _provider(p, config.secret(p.api_key_env))
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            inner.name = f"{p.name}-{seen[p.name]}"
        out.append(BoundedTranslator(inner, p.timeout, settings=p))
    return out
