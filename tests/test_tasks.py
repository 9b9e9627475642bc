import hashlib

import pytest

from worker import progress, tasks
from worker.errors import InvalidArgumentsError


def test_echo_returns_its_arguments():
    assert tasks.echo(a=1, b=[2]) == {"a": 1, "b": [2]}


def test_process_answers_like_the_origin_example():
    assert tasks.process(data="hello") == {
        "processed": True,
        "result": "Processed: hello",
    }


def test_hash_matches_hashlib_over_the_same_bytes():
    block = bytes(range(256)) * 4096
    expected = hashlib.sha256(
        block + (0).to_bytes(4, "big") + block + (1).to_bytes(4, "big")
    )

    assert tasks.hash_data(megabytes=2)["sha256"] == expected.hexdigest()


def test_countdown_reports_each_step_then_done():
    reports = []
    progress.install_sink(reports.append)
    try:
        assert tasks.countdown(steps=3, interval_s=0) == {"steps": 3}
    finally:
        progress.install_sink(None)

    assert [(r["current"], r["total"]) for r in reports] == [
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
    ]


def test_sleep_and_hash_bound_their_arguments():
    with pytest.raises(InvalidArgumentsError):
        tasks.sleep(seconds=-1)
    with pytest.raises(InvalidArgumentsError):
        tasks.hash_data(megabytes=10_000)


def test_fail_raises_its_message():
    with pytest.raises(RuntimeError, match="boom"):
        tasks.fail(message="boom")
