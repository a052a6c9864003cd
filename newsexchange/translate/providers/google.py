"""Google Translate's mobile page, ``GET {url}/m?tl=&sl=&q=``: the translation is the text of
``div.t0`` (or ``div.result-container``) in the HTML answer.

**Decision: a direct httpx client, not deep-translator's ``GoogleTranslator``.** That class
takes no timeout (a server that accepts the connection and never answers blocks forever), no
base URL (``_base_url`` is private) and raises a bare ``TooManyRequests`` for a 429, losing the
``Retry-After``. The request and the parsing are the ones it makes (1.11.4): the same query,
BeautifulSoup's ``html.parser`` and ``get_text(strip=True)``, the same 5,000-character refusal.
"""

from __future__ import annotations

from bs4 import BeautifulSoup

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import provider_error
from newsexchange.translate.providers.http import OneTextPerRequest

__all__ = ["GoogleTranslator"]

#: Google's web endpoint refuses 5,000 characters or more.
MAX_CHARS = 4999
URL = "https://translate.google.com"


class GoogleTranslator(OneTextPerRequest):
    hard_limit = 5000

    def __init__(self, settings: ProviderSettings, api_key: str | None) -> None:
        super().__init__(settings, api_key, MAX_CHARS)
        self.url = (settings.url.rstrip("/") if settings.url else URL) + "/m"

    def _one(self, text: str, source: str, target: str) -> str:
        params = {"tl": target, "sl": source, "q": text.strip()}
        resp = self._request("GET", self.url, params=params)
        if not 200 <= resp.status_code < 300:
            raise self._status_error(resp)
        soup = BeautifulSoup(resp.text, "html.parser")
        element = soup.find("div", {"class": "t0"}) or soup.find(
            "div", {"class": "result-container"}
        )
        if element is None:
            raise provider_error(self.name, "bad_answer", "no translation in the page")
        return element.get_text(strip=True)
