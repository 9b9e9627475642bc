"""The broker lease against a real Redis: one holder, renewal, giving up in time."""

import time

import pytest

from tools.redis_server import free_port
from worker.lease import LEASE_KEY, Lease
from worker.store import connect


@pytest.fixture
def lease_of(redis_client):
    def make(holder, ttl_s=0.6, client=None):
        return Lease(client or redis_client, holder, ttl_s)

    return make


def test_lease_has_one_holder_until_released(lease_of, redis_client):
    first, second = lease_of("a"), lease_of("b")

    assert first.acquire()
    assert not second.acquire()
    assert second.holder_now() == "a"
    assert 0 < redis_client.pttl(LEASE_KEY) <= 600

    first.release()
    assert second.acquire()


def test_lease_renewed_by_its_holder_outlives_its_ttl(lease_of):
    first, second = lease_of("a"), lease_of("b")
    assert first.acquire()

    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert first.keep()
        assert not second.acquire()
        time.sleep(0.05)


def test_lease_that_changed_hands_is_given_up_at_the_next_renewal(
    lease_of, redis_client
):
    first = lease_of("a")
    assert first.acquire()
    redis_client.set(LEASE_KEY, "b")

    time.sleep(first.renew_interval_s)

    assert not first.keep()


def test_lease_given_up_before_it_expires_when_redis_is_unreachable(
    lease_of, redis_client, caplog
):
    # As the broker connects: short timeouts, no retries.
    down = connect(f"redis://127.0.0.1:{free_port()}/0", pool_size=2, timeout_s=0.06)
    first = lease_of("a", client=redis_client)
    assert first.acquire()
    first._client = down  # Redis goes away after the lease was taken
    first._extend = down.register_script("return 1")
    taken_at = time.monotonic()

    while first.keep():
        time.sleep(0.01)
        assert time.monotonic() - taken_at < 0.6

    # Two thirds of the lease, never its whole: the key is still there.
    assert time.monotonic() - taken_at == pytest.approx(0.4, abs=0.15)
    assert redis_client.get(LEASE_KEY) == b"a"
    assert "giving up being active" in caplog.text
