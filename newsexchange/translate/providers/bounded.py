"""No hung step: the wall-clock bound around every provider call.

httpx bounds each socket operation by the provider's ``timeout``, but a server that drips its
answer a byte at a time (each read within the socket timeout, the whole far beyond it) or an
offline model stuck on a text would still hold the step. :func:`bounded_call` runs the call in
a daemon thread and stops waiting after ``timeout`` seconds; the abandoned thread ends at its
next socket timeout, and the step moves on to the next provider at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from newsexchange.config import ProviderSettings
from newsexchange.translate.base import Format, Provider, provider_error

__all__ = ["BoundedTranslator", "bounded_call"]

T = TypeVar("T")


def bounded_call(fn: Callable[[], T], *, timeout: float, provider: str) -> T:
    """Run ``fn`` and give up waiting after ``timeout`` seconds (see the module docstring)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed over to the waiting thread below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"translate-{provider}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise provider_error(provider, "timeout", f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class BoundedTranslator:
    """A provider with the wall-clock bound around every call (see the module docstring)."""

    def __init__(
        self, inner: Provider, timeout: float, *, settings: ProviderSettings | None = None
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.name: str = inner.name
        self.max_chars: int = inner.max_chars
        self.max_texts: int = inner.max_texts
        self.timeout = timeout

    @property
    def requests_made(self) -> int:
        return self.inner.requests_made

    def translate(
        self, texts: list[str], source: str, target: str, *, fmt: Format = "text"
    ) -> list[str]:
        # A provider that may send one request per text after a line mismatch gets a bound
        # that grows with the texts; a single request still gets ``timeout``.
        per_text = self.inner.resends_per_text
        budget = self.timeout * (max(1, min(len(texts), 3)) if per_text else 1)

        def call() -> list[str]:
            return list(self.inner.translate(texts, source, target, fmt=fmt))

        return bounded_call(call, timeout=budget, provider=self.name)

    def close(self) -> None:
        self.inner.close()
