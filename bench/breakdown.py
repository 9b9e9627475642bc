"""Where one synchronous call's time goes, read from the timestamps its record keeps.

Calls are made one at a time over one keep-alive connection. Each record holds
``created_at`` (taken by the web process just before its Redis write),
``started_at`` and ``finished_at`` (taken by the worker pool just before the
start and finish writes); every process shares this machine's clock. With the
client's own send and receive times that splits each call into four stages:

- request -> created: HTTP parsing, checks, until the record is sent to Redis;
- created -> started: the record write, the hop to the broker and on to the
  pool, until the start write;
- started -> finished: the start write, the hop to a child process, the task
  function, the hop back, until the finish write;
- finished -> answer: the finish write, the reply through the broker to the web
  process, the HTTP answer.

The client's own time (Python's http.client) is in the first and last stages.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from urllib.parse import urlsplit

import redis

from bench.http_rows import ECHO_BODY, ECHO_PATH
from worker.store import task_key

STAGES = (
    "request -> created",
    "created -> started",
    "started -> finished",
    "finished -> answer",
)


def measure(base_url: str, redis_url: str, calls: int, limit_s: float) -> str:
    """Make up to ``calls`` calls within ``limit_s``; the stage table as text."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1", address.port, timeout=10
    )
    store = redis.Redis.from_url(redis_url)
    stages: list[list[float]] = [[] for _ in STAGES]
    totals: list[float] = []
    headers = {"Content-Type": "application/json"}
    deadline = time.monotonic() + limit_s
    try:
        for _ in range(calls):
            if time.monotonic() >= deadline:
                break
            sent = time.time()
            connection.request("POST", ECHO_PATH, ECHO_BODY, headers)
            response = connection.getresponse()
            body = response.read()
            answered = time.time()
            if response.status != 200:
                raise RuntimeError(f"echo answered {response.status}: {body!r}")
            moments = store.hmget(
                task_key(json.loads(body)["id"]),
                "created_at",
                "started_at",
                "finished_at",
            )
            if None in moments:
                raise RuntimeError(f"a finished record lacks a timestamp: {moments}")
            points = [sent, *(float(moment) for moment in moments), answered]  # type: ignore[arg-type]
            for index, samples in enumerate(stages):
                samples.append(points[index + 1] - points[index])
            totals.append(answered - sent)
    finally:
        connection.close()
        store.close()
    return render(stages, totals)


def render(stages: list[list[float]], totals: list[float]) -> str:
    """Median and p99 of each stage, in milliseconds."""
    if not totals:
        return "latency breakdown: no calls made"
    lines = [
        f"latency breakdown of {len(totals)} sequential sync echo calls "
        "(ms; stages from the record's timestamps):",
        f"  {'stage':22s} {'p50':>7s} {'p99':>7s}",
    ]
    for name, samples in zip((*STAGES, "total"), (*stages, totals), strict=True):
        lines.append(
            f"  {name:22s} {_ms(statistics.median(samples)):>7s} "
            f"{_ms(_p99(samples)):>7s}"
        )
    return "\n".join(lines)


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"
