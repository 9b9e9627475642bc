"""How long a client should wait before it asks about a task again (``Retry-After``).

A running task that reports progress is extrapolated: the time it took for the
steps done, spread over the steps left. A queued task waits for the tasks queued
before it: one base interval per round of them that the worker processes serving
its name can take at once. A running task without progress gets the base
interval. The answer stays within ``[base, MAX_RETRY_AFTER_S]`` so a client
neither hammers nor sleeps for hours on a rough estimate.
"""

from __future__ import annotations

import math
import time

import orjson

MAX_RETRY_AFTER_S = 60


def retry_after_s(
    fields: dict[bytes, bytes] | None, base_s: int, ahead: int = 0, capacity: int = 1
) -> int:
    """Seconds to wait before polling the task whose raw record is ``fields``.

    ``ahead`` is how many tasks were queued before it, ``capacity`` how many
    worker processes serve its name; both only matter while it is queued (a
    ``fields`` of None means just created, so queued).
    """
    if fields is None or fields.get(b"status") == b"queued":
        rounds = ahead // max(1, capacity)
        return min(MAX_RETRY_AFTER_S, base_s * (1 + rounds))
    if fields.get(b"status") != b"running":
        return base_s
    progress_raw = fields.get(b"progress")
    started_raw = fields.get(b"started_at")
    if progress_raw is None or started_raw is None:
        return base_s
    try:
        progress = orjson.loads(progress_raw)
        current = float(progress["current"])
        total = float(progress["total"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return base_s
    if not (0 < current < total) or not math.isfinite(total):
        return base_s

    elapsed_s = max(0.0, time.time() - float(started_raw))
    remaining_s = elapsed_s / current * (total - current)
    return max(base_s, min(MAX_RETRY_AFTER_S, math.ceil(remaining_s)))
