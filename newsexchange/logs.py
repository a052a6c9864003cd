"""Structured logging: one line per event; JSON when stderr is not a terminal.

Use ``log.info("fetched", extra={"source": sid, "items": n})``; the extra fields become JSON
keys. Secrets never reach here (config hands out secrets only to the provider clients) and
recipient lists are logged as counts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

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
