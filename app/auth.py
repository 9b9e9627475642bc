"""Bearer-key authentication of the API routes (``Authorization: Bearer <key>``).

Keys come from ``TASKGATE_API_KEYS``. When none are set every request passes and
the app logs one warning at start, so a development setup needs no key while a
deployed one cannot forget it silently. Health, the OpenAPI document and the docs
page stay open: probes and readers of the contract carry no key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from flask import Flask, request

from app.errors import RequestError

logger = logging.getLogger(__name__)

PROTECTED_PREFIXES = ("/v1/", "/api/process")


def install_auth(app: Flask, keys: list[str]) -> None:
    """Require one of ``keys`` on every protected route; warn once if there are none."""
    if not keys:
        logger.warning(
            "no TASKGATE_API_KEYS set: the API accepts requests without a key"
        )
        return
    digests = [_digest(key.encode()) for key in keys]

    @app.before_request
    def require_key() -> None:
        if request.path.startswith(PROTECTED_PREFIXES):
            check_bearer(request.headers.get("Authorization"), digests)


def check_bearer(header: str | None, key_digests: list[bytes]) -> None:
    """Raise a 401 problem without credentials, 403 with a key that is not ours.

    ``key_digests`` are SHA-256 digests of the keys: comparing digests of equal
    length keeps even the length of the keys out of the timing.
    """
    if header is None:
        raise _unauthorized("send Authorization: Bearer <key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be Bearer <key>")

    offered = _digest(token.strip().encode("utf-8", "replace"))
    # Compare with every key, without stopping early, so timing says nothing of
    # which key or how many characters matched.
    matched = False
    for digest in key_digests:
        matched |= hmac.compare_digest(offered, digest)
    if not matched:
        raise RequestError(403, "forbidden", "Forbidden", "this API key is not valid")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _unauthorized(detail: str) -> RequestError:
    return RequestError(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="taskgate"'},
    )
