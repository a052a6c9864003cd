"""Structured logging: one line per event; JSON when stderr is not a terminal.

Use ``log.info("fetched", extra={"source": sid, "items": n})``; the extra fields become JSON
keys. Secrets never reach here (config hands out secrets only to the provider clients) and
recipient lists are logged as counts; :class:`SecretRedactor`, installed by ``serve`` and
``run-once``, is the belt to those braces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from newsexchange.config import Config

__all__ = [
    "JsonFormatter",
    "SecretRedactor",
    "TextFormatter",
    "config_secrets",
    "install_secret_redaction",
    "setup_logging",
]

_STD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                data[k] = v
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STD and not k.startswith("_")
        )
        line = f"{record.levelname.lower():7} {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(
    verbosity: int = 0, *, json_lines: bool | None = None, base: int = logging.WARNING
) -> None:
    """Log to stderr from ``base`` (warnings for commands; info for ``serve``, whose normal
    events — serving, job done, stopped — are info and whose problems are warnings), each
    ``-v`` one level more; ``NEWSEXCHANGE_LOG_LEVEL`` wins."""
    level = base - 10 * verbosity
    env_level = os.environ.get("NEWSEXCHANGE_LOG_LEVEL")
    if env_level:
        level = logging.getLevelName(env_level.upper())
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger("newsexchange")
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    root.propagate = False
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class SecretRedactor(logging.Filter):
    """Replaces every secret value of the configuration in a log record with ``***``.

    The steps never log secrets on purpose; this is the belt to that braces: an exception
    message that quotes a URL with a key, a database URL with a password, an SMTP error that
    echoes a login — none of them reaches the log with the secret in it.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)  # uvicorn's terminal colours
        if not self.secrets:
            return True
        record.msg = self._scrub(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key in ("msg", "args") or key.startswith("_"):
                continue
            if isinstance(value, str) and key not in ("name", "levelname", "pathname"):
                setattr(record, key, self._scrub(value))
            elif isinstance(value, dict | list):
                scrubbed = self._scrub(repr(value))
                if scrubbed != repr(value):
                    setattr(record, key, scrubbed)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def config_secrets(config: Config) -> list[str]:
    """Every secret value the configuration can hand out: the values of the environment
    variables its ``*_env`` keys name, the signing key, a database password."""
    names: set[str] = {"NEWSEXCHANGE_SECRET_KEY"}

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str) and k.endswith("_env") and isinstance(v, str):
                    names.add(v)
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(config.model_dump())
    values = [v for n in names if (v := config.secret(n))]
    with contextlib.suppress(Exception):
        values.append(config.secret_key.get_secret_value())
    with contextlib.suppress(ValueError):
        # The URL as written: database_url() only resolves a relative SQLite path, which
        # has no password, and leaving it out keeps this module free of the config package.
        password = urlsplit(config.database_url).password
        if password:
            values.append(password)
    return values


def install_secret_redaction(config: Config) -> SecretRedactor:
    """Attach a :class:`SecretRedactor` to the handlers of the ``newsexchange`` logger."""
    redactor = SecretRedactor(config_secrets(config))
    for handler in logging.getLogger("newsexchange").handlers:
        handler.addFilter(redactor)
    return redactor
