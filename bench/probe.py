"""Single HTTP calls that check a system answers correctly before it is loaded.

A fast wrong answer would make a fine-looking row, so every row first proves its
endpoint returns the right status and JSON. These checks are also all that the
smoke mode asserts.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class ProbeError(AssertionError):
    """An endpoint answered with the wrong status or body."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Status, headers and parsed JSON body of one HTTP response."""

    status: int
    headers: dict[str, str]
    body: Any


def call(
    method: str, url: str, body: Any | None = None, timeout_s: float = 30.0
) -> Answer:
    """Send one request with an optional JSON body; never raise on 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return _answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, dict(error.headers), error.read())


def expect(answer: Answer, status: int, what: str) -> Any:
    """The body of ``answer``; ProbeError unless its status is ``status``."""
    if answer.status != status:
        raise ProbeError(
            f"{what}: expected HTTP {status}, got {answer.status}: {answer.body!r}"
        )
    return answer.body


def expect_equal(actual: Any, wanted: Any, what: str) -> None:
    """ProbeError unless ``actual == wanted``."""
    if actual != wanted:
        raise ProbeError(f"{what}: expected {wanted!r}, got {actual!r}")


def _answer(status: int, headers: dict[str, str], raw: bytes) -> Answer:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    return Answer(status, headers, body)
