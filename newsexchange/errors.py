"""The exceptions newsexchange raises: one base class, one subclass per situation.

Each carries what a user needs to act on it (the file and line of a config mistake, the
source and URL of a failed fetch, whether a provider error is worth retrying). The tree
(the classes in parentheses are defined beside the step that raises them):

* NewsExchangeError — every error raised on purpose; the CLI prints it and exits 1
  + ConfigError (file, line) — a mistake in feeds.yaml or the environment; exit 2
    - ConfigErrors (errors) — several mistakes at once, one per line
  + FetchError (source, url, status, retryable, retry_after) — a source failed
    - (ingest.fetch._TimeoutError) — one attempt timed out: worth another in the same run
  + TranslationError (provider, retryable, retry_after) — a translation provider failed
    - (translate.base.ProviderError) — one provider's answer, as its client read it
  + DigestError — a digest cannot be built, changed or shown as asked
    - (digest.periods.PeriodError) — a date that does not start a period; exit 2
  + ApprovalError — an approval action was refused
    - (approval.tokens.TokenError) — a link refused, in the editor's language
  + DeliveryError (permanent, retry_after) — a message could not be handed to the mailer
  + DigestNotFound (digest_id) — a DigestError, an ApprovalError *and* a DeliveryError, so
    whoever catches one step's own error still catches it; exit 2
* StopRequested — not an error: the service is stopping (raised between two chunks of a
  send; a plain Exception, so no ``except NewsExchangeError`` swallows it)

Outside the tree, because nothing beyond their own module catches them:
``web.limits.BodyTooLarge`` (a request body over its cap: 413), ``common.addresses.
AddressRefused`` (an address the fetcher may not reach), ``delivery.send.SendStopped``
(the console's stop of a send).
"""

from __future__ import annotations

__all__ = [
    "ApprovalError",
    "ConfigError",
    "ConfigErrors",
    "DeliveryError",
    "DigestError",
    "DigestNotFound",
    "FetchError",
    "NewsExchangeError",
    "StopRequested",
    "TranslationError",
]


class NewsExchangeError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(NewsExchangeError):
    """A mistake in feeds.yaml (or the environment); ``str()`` reads ``file:line: message``."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        where = file or ""
        if file and line:
            where = f"{file}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigErrors(ConfigError):
    """Several config mistakes at once, so a user can fix them all in one go."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class FetchError(NewsExchangeError):
    """A source could not be fetched or parsed."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        url: str | None = None,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.url = url
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class TranslationError(NewsExchangeError):
    """A translation provider failed; ``retryable`` says whether trying later may help."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{provider}: {message}" if provider else message)


class DigestError(NewsExchangeError):
    """A digest cannot be built, changed or shown as asked."""


class ApprovalError(NewsExchangeError):
    """An approval action was refused (bad token, wrong editor, frozen digest …)."""


class DeliveryError(NewsExchangeError):
    """A message could not be handed to the mail backend."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(message)


class DigestNotFound(DigestError, ApprovalError, DeliveryError):
    """No digest has this id. Each step that looks a digest up raises it, so whoever catches
    that step's own error still does; at the console it is bad usage (exit 2, as the
    command-line contract says), not a failure of the work."""

    def __init__(self, digest_id: int) -> None:
        self.digest_id = digest_id
        super().__init__(f"no digest with id {digest_id} (see: newsexchange digest list)")


class StopRequested(Exception):
    """Raised between two chunks of a send when the service is stopping."""
