"""What gets translated of a field: a template of literal parts and sentences (pure).

A plain-text field is cut into sentences; an HTML field (sanitized on the way in) is walked
text node by text node, so tags, attributes and links stay exactly as they were and the text
inside code/pre is not translated. :meth:`FieldPlan.assemble` puts the translated sentences
back into the template.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from newsexchange.translate.base import Segment, has_letters, split_long, split_sentences

__all__ = ["FieldPlan", "plan_field"]

_TAG = re.compile(r"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")
_TAG_NAME = re.compile(r"<\s*(/?)\s*([a-zA-Z][a-zA-Z0-9]*)")
_NO_TRANSLATE = frozenset({"code", "pre", "script", "style", "kbd", "samp"})


@dataclass
class FieldPlan:
    """A field cut into parts: ``("raw", markup)`` kept as is, ``("lit", text)`` kept (escaped
    in HTML), ``("core", sentence)`` translated. ``"".join`` of the parts is the field."""

    html: bool
    parts: list[tuple[str, str]] = field(default_factory=list)

    def cores(self) -> list[str]:
        return [t for k, t in self.parts if k == "core"]

    def assemble(self, translated: Callable[[str], str]) -> str:
        out: list[str] = []
        for kind, text in self.parts:
            if kind == "raw":
                out.append(text)
            else:
                value = translated(text) if kind == "core" else text
                out.append(_html.escape(value, quote=False) if self.html else value)
        return "".join(out)


def _add_text(plan: FieldPlan, text: str, split_at: int) -> None:
    for sentence in split_sentences(text):
        for piece in split_long(sentence, split_at) if len(sentence) > split_at else [sentence]:
            seg = Segment.of(piece)
            if seg.lead:
                plan.parts.append(("lit", seg.lead))
            if seg.core:
                plan.parts.append(("core" if has_letters(seg.core) else "lit", seg.core))
            if seg.trail:
                plan.parts.append(("lit", seg.trail))


def plan_field(value: str, *, html: bool, split_at: int) -> FieldPlan:
    """Cut a field into sentences. HTML (sanitized on the way in) is walked text node by text
    node: tags, attributes and links stay exactly as they were; text inside code/pre stays."""
    plan = FieldPlan(html=html)
    if not html:
        _add_text(plan, value, split_at)
        return plan
    skip = 0
    pos = 0
    for m in _TAG.finditer(value):
        if m.start() > pos:
            text = _html.unescape(value[pos : m.start()])
            if skip:
                plan.parts.append(("lit", text))
            else:
                _add_text(plan, text, split_at)
        tag = m.group(0)
        name = _TAG_NAME.match(tag)
        if name and name.group(2).lower() in _NO_TRANSLATE and not tag.endswith("/>"):
            skip = max(0, skip - 1) if name.group(1) else skip + 1
        plan.parts.append(("raw", tag))
        pos = m.end()
    if pos < len(value):
        text = _html.unescape(value[pos:])
        if skip:
            plan.parts.append(("lit", text))
        else:
            _add_text(plan, text, split_at)
    return plan
