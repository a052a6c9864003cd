"""The feed parsers behind :func:`newsexchange.ingest.parse.parse_feed`: the fast path
(:mod:`.fast`), the feedparser reference (:mod:`.reference`), JSON Feed (:mod:`.jsonfeed`),
all ending in the one entry builder (:mod:`.entry`)."""
