"""Moves the wall clock of every Python process in a test run ahead, for the run that shows
what would break a year from now (``./run test`` does it after the run on today's clock).

Python loads this module at start-up when this folder is on ``PYTHONPATH``; it acts only when
``NEWSEXCHANGE_TEST_CLOCK_AHEAD_DAYS`` is set. time-machine moves ``time.time``,
``datetime.now``, ``date.today`` and their kin, and leaves ``time.monotonic`` alone, so
timeouts, sleeps and waits keep working (libfaketime's preload breaks them: with a faked
monotonic clock thread waits never end, without it ``time.sleep`` fails with EINVAL). The
subprocesses the tests start (``newsexchange serve``, ``send``) inherit the variable and so
live on the same moved clock; servers that are not Python (PostgreSQL, dovecot) keep the
real one, which is what a deployment whose clocks differ a little looks like too.
"""

from __future__ import annotations

import os

_days = os.environ.get("NEWSEXCHANGE_TEST_CLOCK_AHEAD_DAYS", "").strip()
if _days:
    from datetime import UTC, datetime, timedelta

    import time_machine

    _travel = time_machine.travel(
        datetime.now(UTC) + timedelta(days=float(_days)), tick=True
    )
    _travel.start()
