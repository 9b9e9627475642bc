"""The active broker's lease: one Redis key with an expiry, so one broker is active.

A broker that wants to be active sets ``taskgate:broker-lease`` to its own name
with ``SET NX PX``; only one can succeed while the key lives. The holder renews
it with a compare-and-extend script (extend only if the value is still its own
name) every third of the lease, and gives up being active on its own once two
thirds of the lease passed since the last renewal it *sent* succeeded: Redis set
the expiry no earlier than that send, so the key is still ours while we act, and
the remaining third is the margin for a routing turn and clock rates. When the
active broker dies, its key expires and a standby's next ``SET NX`` wins.

This is a lease, not consensus: it relies on one Redis (or its Sentinel-managed
master). Known limit: a Redis failover that loses the key's last write lets a
standby take the lease while the old broker still holds it for up to two thirds
of a lease; both then listen for that long, and clients may send to either.
Tasks stay correct (Redis decides every transition), only replies may be lost.
"""

from __future__ import annotations

import logging
import math
import time

import redis

from worker.errors import StoreUnavailableError
from worker.store import PREFIX, REDIS_DOWN_ERRORS

logger = logging.getLogger(__name__)

LEASE_KEY = PREFIX + "broker-lease"

# KEYS: the lease. ARGV: holder, ttl in ms. 1 if extended, 0 if not ours.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: the lease. ARGV: holder. Deletes it only if it is ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """This broker's claim on the lease, and when it must stop trusting it."""

    def __init__(self, client: redis.Redis, holder: str, ttl_s: float) -> None:
        self.holder = holder
        self._client = client
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._ttl_s = ttl_s
        self._extend = client.register_script(EXTEND)
        self._release = client.register_script(RELEASE)
        self._valid_until = 0.0
        self._renew_at = 0.0

    @property
    def renew_interval_s(self) -> float:
        """How often the holder renews, and a standby tries to take it."""
        return self._ttl_s / 3

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; False if held or Redis is down."""
        sent = time.monotonic()
        try:
            taken = self._client.set(LEASE_KEY, self.holder, nx=True, px=self._ttl_ms)
        except REDIS_DOWN_ERRORS as exc:
            logger.debug("cannot reach Redis for the lease: %s", exc)
            return False
        if taken:
            self._held_since(sent)
        return bool(taken)

    def holder_now(self) -> str:
        """Who holds the lease now ('' if nobody or Redis is down), for the log."""
        try:
            value = self._client.get(LEASE_KEY)
        except REDIS_DOWN_ERRORS:
            return ""
        return value.decode() if isinstance(value, bytes) else ""

    def keep(self) -> bool:
        """Renew when due; False once the lease can no longer be trusted as ours.

        Call often (each routing turn). A renewal that Redis does not answer is
        retried on the next call; a renewal that finds another holder, or two
        thirds of a lease without a successful one, ends it.
        """
        now = time.monotonic()
        if now >= self._valid_until:
            logger.error(
                "broker lease not renewed for %.1f s; giving up being active",
                self._ttl_s * 2 / 3,
            )
            return False
        if now < self._renew_at:
            return True
        try:
            extended = self._extend(keys=[LEASE_KEY], args=[self.holder, self._ttl_ms])
        except REDIS_DOWN_ERRORS as exc:
            logger.warning("cannot renew the broker lease: %s", exc)
            self._renew_at = now + min(0.1, self._ttl_s / 10)
            return True
        if not extended:
            logger.error("broker lease taken by another broker; giving up being active")
            return False
        self._held_since(now)
        return True

    def release(self) -> None:
        """Give the lease up at a clean stop, so a standby need not wait it out."""
        self._valid_until = 0.0
        try:
            self._release(keys=[LEASE_KEY], args=[self.holder])
        except REDIS_DOWN_ERRORS as exc:
            raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc

    def _held_since(self, sent: float) -> None:
        self._valid_until = sent + self._ttl_s * 2 / 3
        self._renew_at = sent + self.renew_interval_s
