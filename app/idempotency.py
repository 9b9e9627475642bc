"""The ``Idempotency-Key`` request header: reading it and fingerprinting a request.

A key names the first task created with it for ``TASKGATE_IDEMPOTENCY_TTL_S``.
The request's fingerprint is the task name plus its arguments with sorted keys, so
the same arguments written with other spacing or member order count as the same
body. A key is scoped to the API key it came with, so two clients
with different API keys cannot meet each other's tasks through a shared key; with
authentication off all clients share one scope, so use random keys (UUIDs).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from flask import request

from app.errors import RequestError
from worker.store import Idempotency

# Visible ASCII but comma, optionally as an RFC 8941 string ("..."), at most 255
# characters. No comma: servers join a repeated header with commas, and a key sent
# twice must not pass as one key.
KEY_SYNTAX = re.compile(r'^"?([!#-+\--~]{1,255})"?$')


def read_idempotency(
    name: str, arguments: dict[str, Any], ttl_s: int
) -> Idempotency | None:
    """The request's key and fingerprint; None without the header; 400 if malformed."""
    headers = request.headers.getlist("Idempotency-Key")
    if not headers:
        return None
    match = KEY_SYNTAX.fullmatch(headers[0])
    if len(headers) > 1 or match is None:
        raise RequestError(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "send one Idempotency-Key of 1 to 255 visible ASCII characters, no comma",
        )
    fingerprint = orjson.dumps([name, arguments], option=orjson.OPT_SORT_KEYS)
    # The API key itself, however the header spells "Bearer" and its spaces.
    _, _, token = request.headers.get("Authorization", "").partition(" ")
    scope = token.strip()
    scoped_key = f"{scope}\n{match.group(1)}".encode("utf-8", "replace")
    return Idempotency(
        key_digest=hashlib.sha256(scoped_key).hexdigest(),
        request_digest=hashlib.sha256(fingerprint).hexdigest(),
        ttl_s=ttl_s,
    )


def key_reused_error() -> RequestError:
    """The 422 problem of a key sent again with another request."""
    return RequestError(
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused",
        "this Idempotency-Key was first sent with another task or other arguments",
    )
