"""Microsoft Translator v3, ``POST {url}/translate?api-version=3.0&from=&to=`` with a JSON list
``[{"text"}]`` and the key (and region) in ``Ocp-Apim-Subscription-*`` headers → ``[{translations:
[{text, to}]}]``; errors are ``{"error": {"code", "message"}}``.

**Decision: a direct httpx client, not deep-translator's ``MicrosoftTranslator``.** Its
constructor asks Microsoft for the language list (an unbounded request to a fixed URL on every
construction; the exchange needs three languages), and the class takes no timeout and no base
URL. The request is the one it makes (1.11.4): one text per request.
"""

from __future__ import annotations

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import provider_error
from newsexchange.translate.providers.http import KeyedProvider

__all__ = ["MicrosoftTranslator"]

#: Microsoft takes 50,000 characters per request; 10,000 keeps each answer quick.
MAX_CHARS = 10000
URL = "https://api.cognitive.microsofttranslator.com"


class MicrosoftTranslator(KeyedProvider):
    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        super().__init__(settings, api_key, MAX_CHARS)
        self.url = (settings.url.rstrip("/") if settings.url else URL) + "/translate"
        self._headers = {
            "Ocp-Apim-Subscription-Key": api_key or "",
            "Content-type": "application/json",
        }
        if settings.region:
            self._headers["Ocp-Apim-Subscription-Region"] = settings.region

    def _one(self, text: str, source: str, target: str) -> str:
        resp = self._request(
            "POST",
            self.url,
            params={"api-version": "3.0", "from": source, "to": target},
            headers=self._headers,
            json=[{"text": text}],
        )
        if not 200 <= resp.status_code < 300:
            raise self._status_error(resp)
        data = self._json(resp)
        try:
            return "\n".join(str(t["text"]) for t in data[0]["translations"])
        except (KeyError, IndexError, TypeError):
            raise provider_error(self.name, "bad_answer", "no translation in the answer") from None
