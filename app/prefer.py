"""RFC 7240 ``Prefer`` on task submission: ``respond-async`` and ``wait=N``.

Preferences are hints: one the server does not know, or whose value it cannot
read, is ignored rather than refused, as RFC 7240 asks. A preference named twice
(in one header or in repeated headers) counts once, by its first mention. The
answer names what it honoured in ``Preference-Applied``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flask import request

from app.params import SECONDS


@dataclass(frozen=True, slots=True)
class Preferences:
    """The preferences taskgate understands, as the client stated them."""

    respond_async: bool = False
    wait_s: float | None = None
    # ``return=representation`` or ``return=minimal``, or None.
    return_: str | None = None


def read_preferences() -> Preferences:
    """Parse every ``Prefer`` header of the current request."""
    seen: dict[str, str] = {}
    for header in request.headers.getlist("Prefer"):
        for item in header.split(","):
            # Parameters after ';' qualify a preference; taskgate uses none.
            token = item.split(";", 1)[0].strip()
            name, _, value = token.partition("=")
            name = name.strip().lower()
            if name and name not in seen:
                seen[name] = value.strip().strip('"')

    wait_s = None
    raw_wait = seen.get("wait")
    if raw_wait is not None and SECONDS.match(raw_wait):
        wait_s = float(raw_wait)
    return_ = seen.get("return")
    return Preferences(
        respond_async="respond-async" in seen,
        wait_s=wait_s,
        return_=return_ if return_ in ("representation", "minimal") else None,
    )


def decide_wait(
    query_wait_s: float | None, preferences: Preferences, default_s: float, cap_s: float
) -> tuple[float, list[str]]:
    """The wait of one submission and the preferences it honours.

    ``?wait=`` is explicit and wins over ``Prefer``. ``respond-async`` alone
    answers at once; with ``wait=N`` it answers after at most ``N`` seconds, as
    RFC 7240 section 4.3 reads the pair.
    """
    if query_wait_s is not None:
        return min(query_wait_s, cap_s), []
    if preferences.wait_s is not None:
        wait_s = min(preferences.wait_s, cap_s)
        applied = [f"wait={_format_seconds(wait_s)}"]
        if preferences.respond_async:
            applied.insert(0, "respond-async")
        return wait_s, applied
    if preferences.respond_async:
        return 0.0, ["respond-async"]
    return default_s, []


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if math.isclose(seconds, int(seconds)) else f"{seconds:g}"
