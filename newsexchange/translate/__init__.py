"""The translate step: every item in every language an exchange will carry it in, plus English.

The step itself is :func:`run_translate` (:mod:`.step`, which says how a page of items goes
through), and :func:`pending_ranges` cuts its work into id ranges for a work queue; the rest, in the order an item meets them: :mod:`.jobs` and :mod:`.plan` (what an
item needs), :mod:`.memory` (the translation memory, editor corrections), :mod:`.fields` (a
field cut into sentences), :mod:`.glossary`, :mod:`.fill` and :mod:`.chain` (memory, then the
providers in order), :mod:`.providers` (one module per provider, behind :class:`.base.Translator`),
:mod:`.rows` (what is written).

Re-exported lazily (PEP 562 ``__getattr__``): ``check --sources`` imports :mod:`.glossary`
without the step's providers, httpx and bs4 (issue 16).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsexchange.translate.base import ProviderError, Translator
    from newsexchange.translate.chain import Chain
    from newsexchange.translate.fields import FieldPlan, plan_field
    from newsexchange.translate.memory import import_memory, set_editor_translation
    from newsexchange.translate.report import TranslateReport
    from newsexchange.translate.step import (
        iter_translations,
        pending_ranges,
        providers_down,
        run_translate,
        translation_data,
    )

__all__ = [
    "Chain",
    "FieldPlan",
    "ProviderError",
    "TranslateReport",
    "Translator",
    "import_memory",
    "iter_translations",
    "pending_ranges",
    "plan_field",
    "providers_down",
    "run_translate",
    "set_editor_translation",
    "translation_data",
]


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module on first use."""
    home = {
        "ProviderError": "base", "Translator": "base", "Chain": "chain",
        "FieldPlan": "fields", "plan_field": "fields", "import_memory": "memory",
        "set_editor_translation": "memory", "TranslateReport": "report",
        "iter_translations": "step", "pending_ranges": "step", "providers_down": "step",
        "run_translate": "step", "translation_data": "step",
    }.get(name)  # fmt: skip
    if home is not None:
        value = getattr(import_module(f"{__name__}.{home}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
