"""feeds.yaml and the environment → one validated, frozen :class:`Config`.

Nothing below this package reads YAML or environment variables. Every mistake in the file is
reported as ``feeds.yaml:LINE: what is wrong (expected …)``; all mistakes are collected so a
user can fix them in one pass. Unknown keys are errors, never silently ignored.

- :mod:`.schema` — the pydantic models, one per section (and ``database_url``);
- :mod:`.yaml_lines` — the YAML read with the line of every key; validation errors worded;
- :mod:`.checks` — the references between sections, one function per rule;
- :mod:`.load` — :func:`load_config`, which puts the three together.

Secrets never live in the file: it names environment variables (``*_env`` keys) and
:meth:`Config.secret` reads them from the environment snapshot taken at load time.
"""

from newsexchange.config.load import load_config, load_config_text
from newsexchange.config.schema import (
    DEFAULT_CONFIG,
    EMAIL_RE,
    ID_RE,
    LANGUAGES,
    ApprovalSettings,
    Config,
    EditorSettings,
    ExchangeSettings,
    FetchSettings,
    HtmlSelect,
    ImapSettings,
    Language,
    ListSettings,
    MailSettings,
    ProviderSettings,
    RegionSettings,
    ScheduleSettings,
    SendgridSettings,
    ServiceSettings,
    SmtpSettings,
    SourceSettings,
    TranslationSettings,
    database_url,
)
from newsexchange.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "EMAIL_RE",
    "ID_RE",
    "LANGUAGES",
    "ApprovalSettings",
    "Config",
    "ConfigError",
    "EditorSettings",
    "ExchangeSettings",
    "FetchSettings",
    "HtmlSelect",
    "ImapSettings",
    "Language",
    "ListSettings",
    "MailSettings",
    "ProviderSettings",
    "RegionSettings",
    "ScheduleSettings",
    "SendgridSettings",
    "ServiceSettings",
    "SmtpSettings",
    "SourceSettings",
    "TranslationSettings",
    "database_url",
    "load_config",
    "load_config_text",
]
