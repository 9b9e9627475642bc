"""Retry-After estimates from a task's record."""

from __future__ import annotations

import time

import orjson

from app.retry import MAX_RETRY_AFTER_S, retry_after_s


def running(started_ago_s, progress):
    return {
        b"status": b"running",
        b"started_at": repr(time.time() - started_ago_s).encode(),
        b"progress": orjson.dumps(progress),
    }


def test_progress_is_extrapolated_to_the_time_left():
    fields = running(10, {"current": 2, "total": 4, "message": None})
    assert 10 <= retry_after_s(fields, 1) <= 11


def test_estimates_stay_between_the_base_and_the_cap():
    assert retry_after_s(running(0.1, {"current": 9, "total": 10}), 2) == 2
    far = running(100, {"current": 1, "total": 1000})
    assert retry_after_s(far, 1) == MAX_RETRY_AFTER_S


def test_without_usable_progress_the_base_applies():
    assert retry_after_s(None, 3) == 3
    assert retry_after_s({b"status": b"queued"}, 3) == 3
    for progress in (
        {"current": 0, "total": 4},
        {"current": 5, "total": None},
        {"current": "x", "total": 4},
        {"total": 4},
        [],
    ):
        assert retry_after_s(running(5, progress), 3) == 3


def test_a_queued_task_waits_a_round_per_full_set_of_workers_before_it():
    queued = {b"status": b"queued"}
    assert retry_after_s(queued, 1, ahead=3, capacity=4) == 1
    assert retry_after_s(queued, 1, ahead=8, capacity=4) == 3
    assert retry_after_s(None, 2, ahead=5, capacity=0) == 12
    assert retry_after_s(None, 1, ahead=10_000, capacity=1) == MAX_RETRY_AFTER_S
