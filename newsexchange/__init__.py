"""newsexchange: a cross-border regional news exchange.

Collects news from regional feeds, translates it between Finnish, Russian and English,
assembles a digest twice a month for each direction of the exchange, has the editors approve
every digest by email, and mails approved digests to media lists of journalists.
"""

__version__ = "0.1.0"
