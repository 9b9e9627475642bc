"""Bearer keys: the warning without keys, and a comparison that never stops early."""

from __future__ import annotations

import hmac
import logging

import pytest
from flask import Flask

from app import auth
from app.errors import RequestError

KEYS = ["first-key-0123456789", "second-key-0123456789", "third-key-0123456789"]


def test_no_keys_means_one_warning_and_open_routes(caplog):
    app = Flask(__name__)
    with caplog.at_level(logging.WARNING, logger="app.auth"):
        auth.install_auth(app, [])
    assert [r.getMessage() for r in caplog.records] == [
        "no TASKGATE_API_KEYS set: the API accepts requests without a key"
    ]
    assert not app.before_request_funcs


@pytest.mark.parametrize(
    "offered", [KEYS[0], KEYS[2], "not-a-key-0123456789", KEYS[0][:-1]]
)
def test_every_key_is_compared_whichever_matches(monkeypatch, offered):
    digests = [auth._digest(key.encode()) for key in KEYS]
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    try:
        auth.check_bearer(f"Bearer {offered}", digests)
        matched = True
    except RequestError as refused:
        assert refused.status == 403
        matched = False
    assert matched is (offered in KEYS)
    # Digests of equal length, one comparison per key: timing says nothing of
    # which key matched or how many characters did.
    assert [b for _, b in compared] == digests
    assert {len(a) for a, _ in compared} == {32}


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_no_bearer_key_is_401_with_a_challenge(header):
    with pytest.raises(RequestError) as refused:
        auth.check_bearer(header, [auth._digest(b"k" * 20)])
    assert refused.value.status == 401
    assert refused.value.headers == {"WWW-Authenticate": 'Bearer realm="taskgate"'}
