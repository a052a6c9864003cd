"""Small mechanisms every step shares: one back-off and one Retry-After parser
(:mod:`.retry`), one process identity for leases and claims (:mod:`.leases`), one pacer
(:mod:`.pacing`), one guard on the addresses a fetch may reach (:mod:`.addresses`)."""
