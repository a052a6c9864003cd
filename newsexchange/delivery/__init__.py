"""The delivery step: approved digests go out from the outbox, exactly once per recipient.

The public face is :func:`run_send` and its :class:`SendReport`; the modules inside are
listed in :mod:`.send`'s docstring. Media lists (:mod:`.lists`), unsubscribe links
(:mod:`.unsubscribe`) and provider events (:mod:`.events`) belong here too.
"""

from newsexchange.delivery.report import SendReport
from newsexchange.delivery.send import SendStopped, run_send

__all__ = ["SendReport", "SendStopped", "run_send"]
