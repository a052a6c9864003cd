"""The translation providers: one module per wire format, chosen by ``translation.providers``
(:func:`build_translators`). Each module's docstring says what it speaks and why it speaks it
directly over httpx rather than through deep-translator."""

from newsexchange.translate.providers.argos import ArgosTranslator
from newsexchange.translate.providers.bounded import BoundedTranslator, bounded_call
from newsexchange.translate.providers.build import build_translators
from newsexchange.translate.providers.deepl import DeeplTranslator
from newsexchange.translate.providers.google import GoogleTranslator
from newsexchange.translate.providers.libre import LibreTranslator
from newsexchange.translate.providers.microsoft import MicrosoftTranslator
from newsexchange.translate.providers.mymemory import MyMemoryTranslator

__all__ = [
    "ArgosTranslator",
    "BoundedTranslator",
    "DeeplTranslator",
    "GoogleTranslator",
    "LibreTranslator",
    "MicrosoftTranslator",
    "MyMemoryTranslator",
    "bounded_call",
    "build_translators",
]
