"""Reading a request's inputs strictly: the JSON body and the seconds parameters.

Each function raises :class:`~app.errors.RequestError` with the problem to answer,
so routes only deal with valid values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import RequestError

JSON_TYPES = ("application/json",)
# Plain decimal seconds only: no exponents, signs, "nan", "inf", "1_0" or digits
# from other scripts, all of which float() would take.
SECONDS = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,6})?$")
# The same, above 0 (the lookahead refuses all-zero spellings such as "0.000").
POSITIVE_SECONDS = re.compile(r"^(?!0*(\.0*)?$)[0-9]{1,9}(\.[0-9]{1,6})?$")
# JSON integers taskgate passes on exactly (what a 64-bit signed or unsigned fits).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
LONG_DIGITS = re.compile(rb"[0-9]{19,}")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How large and how deep a JSON body may be."""

    max_bytes: int
    max_depth: int
    max_items: int


def _is_json(mimetype: str) -> bool:
    """``application/json`` or a ``type/subtype+json``; a missing header is JSON too."""
    if mimetype in JSON_TYPES:
        return True
    kind, _, subtype = mimetype.partition("/")
    return bool(kind) and subtype.endswith("+json") and len(subtype) > len("+json")


def json_object_body(limits: BodyLimits) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed object; 413, 415 or 400 problems otherwise."""
    if "Content-Type" in request.headers and not _is_json(request.mimetype):
        raise RequestError(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send the arguments as application/json",
        )
    body = _read_body(limits.max_bytes)
    try:
        arguments = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid_body(f"the body is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise _invalid_body("the body must be a JSON object of keyword arguments")
    # Shape first: the integer check parses again, recursively.
    _check_shape(body, arguments, limits)
    if LONG_DIGITS.search(body):
        _check_integer_range(body)
    return body, arguments


def _check_shape(body: bytes, arguments: dict[str, Any], limits: BodyLimits) -> None:
    """Refuse bodies nested deeper, or holding more values, than the limits.

    Counting bracket and comma bytes is a quick upper bound that clears almost
    every body without walking the parsed value; only a body that could exceed a
    limit is walked (iteratively, so depth cannot exhaust the stack).
    """
    brackets = body.count(b"{") + body.count(b"[")
    could_be_deep = brackets > limits.max_depth
    could_be_large = body.count(b",") + brackets > limits.max_items
    if not (could_be_deep or could_be_large):
        return

    items = 0
    pending: list[tuple[Any, int]] = [(arguments, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limits.max_depth:
            raise _invalid_body(f"the body nests deeper than {limits.max_depth} levels")
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            items += 1
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))
        if items > limits.max_items:
            raise _invalid_body(f"the body holds more than {limits.max_items} values")


def _read_body(max_bytes: int) -> bytes:
    if request.content_length is not None:
        # Werkzeug answers 413 itself past MAX_CONTENT_LENGTH.
        return request.get_data(cache=False)
    # A chunked body has no length to check up front, and Werkzeug would cut it
    # at the limit silently: read one byte more to know.
    body: bytes = request.environ["wsgi.input"].read(max_bytes + 1)
    if len(body) > max_bytes:
        raise RequestEntityTooLarge()
    return body


def _check_integer_range(body: bytes) -> None:
    """Refuse integers that would lose digits (the JSON parser would make floats)."""

    def checked(text: str) -> int:
        value = int(text)
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(text)
        return value

    try:
        json.loads(body, parse_int=checked)
    except ValueError as exc:
        raise _invalid_body(
            f"integers must lie between -2**63 and 2**64-1; got {str(exc)[:40]}"
        ) from None


def seconds_param(
    name: str, default: float, cap: float, positive: bool = False
) -> float:
    """Query parameter ``name`` in seconds, capped at ``cap``; ``default`` if absent."""
    value = optional_seconds_param(name, positive)
    return default if value is None else min(value, cap)


def optional_seconds_param(name: str, positive: bool = False) -> float | None:
    """Query parameter ``name`` in seconds, or None if absent; a 400 problem if bad."""
    raw = request.args.get(name)
    if raw is None:
        return None
    # fullmatch: "$" alone would let a trailing newline through.
    if not (POSITIVE_SECONDS if positive else SECONDS).fullmatch(raw):
        least = "more than 0" if positive else "0 or more"
        raise RequestError(
            400,
            f"invalid-{name.replace('_', '-')}",
            f"Invalid {name}",
            f"{name} must be a decimal number of seconds, {least}",
        )
    return float(raw)


def _invalid_body(detail: str) -> RequestError:
    return RequestError(400, "invalid-body", "Invalid body", detail)
