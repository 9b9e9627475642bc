"""RFC 7240 preference parsing and the wait it decides, in a request context."""

from __future__ import annotations

import pytest
from flask import Flask

from app.prefer import Preferences, decide_wait, read_preferences


def preferences(*headers: str) -> Preferences:
    app = Flask(__name__)
    with app.test_request_context(headers=[("Prefer", h) for h in headers]):
        return read_preferences()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), Preferences()),
        (("respond-async",), Preferences(respond_async=True)),
        (("RESPOND-ASYNC; foo=bar",), Preferences(respond_async=True)),
        (("wait=5",), Preferences(wait_s=5.0)),
        (('wait="2.5"',), Preferences(wait_s=2.5)),
        (("wait=5, wait=1",), Preferences(wait_s=5.0)),
        (("wait=5", "wait=1"), Preferences(wait_s=5.0)),
        (("wait=-1",), Preferences()),
        (("wait=1e9",), Preferences()),
        (("wait=nan, respond-async",), Preferences(respond_async=True)),
        (("return=minimal",), Preferences(return_="minimal")),
        (("return=everything",), Preferences()),
        ((",,;, =",), Preferences()),
    ],
)
def test_read_preferences(headers, expected):
    assert preferences(*headers) == expected


@pytest.mark.parametrize(
    ("query", "prefs", "wait_s", "applied"),
    [
        (None, Preferences(), 20.0, []),
        (None, Preferences(respond_async=True), 0.0, ["respond-async"]),
        (None, Preferences(wait_s=3.0), 3.0, ["wait=3"]),
        (None, Preferences(wait_s=99.0), 25.0, ["wait=25"]),
        (
            None,
            Preferences(respond_async=True, wait_s=0.5),
            0.5,
            ["respond-async", "wait=0.5"],
        ),
        (4.0, Preferences(respond_async=True), 4.0, []),
        (99.0, Preferences(), 25.0, []),
    ],
)
def test_decide_wait(query, prefs, wait_s, applied):
    assert decide_wait(query, prefs, 20.0, 25.0) == (wait_s, applied)
