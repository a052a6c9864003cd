"""MyMemory, ``GET {url}/get?langpair=fi-FI|ru-RU&q=`` → ``{responseData: {translatedText},
responseStatus, matches}``.

**Decision: a direct httpx client, not deep-translator's ``MyMemoryTranslator``.** MyMemory
answers HTTP 200 even when it refuses: the refusal is in ``responseStatus`` and the
"translation" is a warning text (quota: "MYMEMORY WARNING: YOU USED ALL AVAILABLE FREE
TRANSLATIONS FOR TODAY…"), which deep-translator returns as the translation; it also takes no
timeout and no base URL. The request is the one it makes (1.11.4), with its regional codes.
"""

from __future__ import annotations

from typing import Any

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import classify_status, provider_error
from newsexchange.translate.providers.http import OneTextPerRequest

__all__ = ["MyMemoryTranslator"]

#: MyMemory refuses 500 characters or more.
MAX_CHARS = 499
URL = "https://api.mymemory.translated.net"
CODES = {"fi": "fi-FI", "ru": "ru-RU", "en": "en-GB"}


class MyMemoryTranslator(OneTextPerRequest):
    hard_limit = 500

    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        super().__init__(settings, api_key, MAX_CHARS)
        self.url = (settings.url.rstrip("/") if settings.url else URL) + "/get"

    def _one(self, text: str, source: str, target: str) -> str:
        langpair = f"{CODES.get(source, source)}|{CODES.get(target, target)}"
        resp = self._request("GET", self.url, params={"langpair": langpair, "q": text.strip()})
        if not 200 <= resp.status_code < 300:
            raise self._status_error(resp)
        data = self._json(resp)
        result = _translation(data)
        if result is None:
            raise provider_error(self.name, "bad_answer", "no translation in the answer")
        if "MYMEMORY WARNING" in result.upper():
            raise provider_error(self.name, "quota", result[:200])
        try:
            status = int(data.get("responseStatus", 200))
        except (ValueError, TypeError, AttributeError):
            status = 200
        if status != 200:
            raise classify_status(self.name, status, result, resp.headers.get("Retry-After"))
        return result


def _translation(data: Any) -> str | None:
    """The translation, or else the first match (as deep-translator reads the answer)."""
    if not isinstance(data, dict):
        return None
    response = data.get("responseData")
    text = response.get("translatedText") if isinstance(response, dict) else None
    if not text:
        matches = data.get("matches") or []
        text = matches[0].get("translation") if matches and isinstance(matches[0], dict) else None
    return text if isinstance(text, str) else None
