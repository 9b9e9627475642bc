"""Reading a request's inputs strictly: the JSON body and the seconds parameters.

Each function raises :class:`~app.errors.RequestError` with the problem to answer,
so routes only deal with valid values.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import RequestError

JSON_TYPES = ("application/json",)
# Plain decimal seconds only: no exponents, signs, "nan", "inf", "1_0" or digits
# from other scripts, all of which float() would take.
SECONDS = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,6})?$")
# JSON integers taskgate passes on exactly (what a 64-bit signed or unsigned fits).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
LONG_DIGITS = re.compile(rb"[0-9]{19,}")


def json_object_body(max_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed object; 413, 415 or 400 problems otherwise."""
    mimetype = request.mimetype
    if mimetype and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise RequestError(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send the arguments as application/json",
        )
    body = _read_body(max_bytes)
    try:
        arguments = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid_body(f"the body is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise _invalid_body("the body must be a JSON object of keyword arguments")
    if LONG_DIGITS.search(body):
        _check_integer_range(body)
    return body, arguments


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
    raw = request.args.get(name)
    if raw is None:
        return default
    if not SECONDS.match(raw) or (positive and float(raw) == 0):
        least = "more than 0" if positive else "0 or more"
        raise RequestError(
            400,
            f"invalid-{name.replace('_', '-')}",
            f"Invalid {name}",
            f"{name} must be a decimal number of seconds, {least}",
        )
    return min(float(raw), cap)


def _invalid_body(detail: str) -> RequestError:
    return RequestError(400, "invalid-body", "Invalid body", detail)
