"""RedBeat that outlives a Redis restart: beat keeps running, re-takes its lock and re-installs its entries.

Stock RedBeat extends its lock in `tick()`; when Redis is away the extension raises
ConnectionError, beat logs CRITICAL and exits, and with it the outbox relay. After a restart
without persistence the lock and the schedule are gone from Redis too. Here a Redis fault
makes beat wait and retry; once Redis answers again it takes the lock again (waiting, as a
standby beat does, if another beat took it meanwhile) and re-installs the YAML's entries.
"""

from __future__ import annotations

import logging
from typing import Any

from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock
from redis import exceptions as redis_errors

log = logging.getLogger("timber_tasks.beat")

RETRY_SECONDS = 1.0  # how often beat knocks while Redis is away
REDIS_FAULTS = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
                redis_errors.LockError, redis_errors.ReadOnlyError)


class ResilientRedBeatScheduler(RedBeatScheduler):
    """RedBeat, retrying through Redis faults instead of stopping beat."""

    _recovering = False

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # RedBeat's signature
        try:
            if self._recovering or (self.lock_key and self.lock is None):  # no lock: Redis was down at start
                self._recover()
            return float(super().tick(min=min, **kwargs))
        except REDIS_FAULTS as exc:
            if not self._recovering:
                log.warning("beat: Redis unavailable (%s: %s); retrying every %.0f s", type(exc).__name__,
                            exc, RETRY_SECONDS)
            self._recovering = True
            return RETRY_SECONDS

    def setup_schedule(self) -> None:
        """At start too: Redis away while beat starts is retried in tick(), not a crash."""
        try:
            super().setup_schedule()
        except REDIS_FAULTS as exc:
            log.warning("beat: Redis unavailable at start (%s: %s); retrying", type(exc).__name__, exc)
            self._recovering = True

    def _recover(self) -> None:
        """Redis answers again: own the lock, and put back entries a restart without persistence lost."""
        if self.lock_key and (self.lock is None or not self.lock.owned()):
            log.info("beat: Redis is back; taking the beat lock again")
            acquire_distributed_beat_lock(sender=_Sender(self))
        super().setup_schedule()
        self._recovering = False
        log.info("beat: Redis is back; schedule re-installed, beat goes on")


class _Sender:
    """What acquire_distributed_beat_lock expects: something with `.scheduler`."""

    def __init__(self, scheduler: RedBeatScheduler) -> None:
        self.scheduler = scheduler
