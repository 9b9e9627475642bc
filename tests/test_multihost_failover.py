"""A standby broker on another host takes over when the active one is killed.

Brokers on ``broker-a`` and ``broker-b``, both listed in every process's
settings; pools on two worker hosts; gunicorn on the web host; CURVE on. Tasks
are submitted as in tools/chaos.py while the active broker is killed, and the
chaos script's count must still say ``stuck 0, lost 0``.
"""

import random
import signal
import time

import pytest
import requests

from tests.cluster import make_cluster, network
from tests.helpers import wait_for
from tools.chaos import read_runs, tally

__all__ = ["make_cluster", "network"]  # fixtures, imported for pytest

pytestmark = pytest.mark.slow

TASKS = 150
SPREAD_S = 8.0
KILL_AT_S = 3.0
FINAL = ("succeeded", "failed", "cancelled")


def submit_one(cluster, journal, index, accepted, rng, refusals):
    """Submit one chaos task as tools.chaos does, retrying refusals (bounded)."""
    for attempt in range(100):
        token = f"{index}-{attempt}"
        body = {"token": token, "path": str(journal), "seconds": rng.random() * 0.3}
        try:
            answer = requests.post(
                cluster.url("/v1/tasks/chaos.work"),
                json=body,
                params={"wait": "0"},
                timeout=10,
            )
        except requests.RequestException:
            answer = None
        if answer is not None and answer.status_code == 202:
            accepted[answer.json()["id"]] = token
            return
        refusals.append(answer.status_code if answer is not None else 0)
        time.sleep(0.2)


def first_success_after(cluster, since):
    """Seconds from ``since`` until a synchronous task succeeds (bounded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            answer = requests.post(
                cluster.url("/v1/tasks/echo"), json={}, params={"wait": "2"}, timeout=10
            )
            if answer.status_code == 200:
                return time.monotonic() - since
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError("no task succeeded within 60 s of the kill")


def took_over_after(standby, since):
    """Seconds from ``since`` until the standby says it is active (bounded)."""
    wait_for(
        lambda: "broker active" in standby.log(),
        timeout_s=30,
        interval_s=0.01,
        what="the standby broker to take over",
    )
    return time.monotonic() - since


def read_records(cluster, ids):
    pipe = cluster.redis.pipeline(transaction=False)
    for task_id in ids:
        pipe.hgetall(f"taskgate:task:{task_id}")
    return {i: (fields or None) for i, fields in zip(ids, pipe.execute(), strict=True)}


def drain(cluster, ids, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while True:
        records = cluster.web_call(read_records, cluster, ids)
        done = all(
            r is None or r[b"status"].decode() in FINAL for r in records.values()
        )
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_multihost_killing_the_active_broker_the_standby_takes_over_losing_nothing(
    make_cluster, tmp_path
):
    cluster = make_cluster(curve=True)
    cluster.brokers = ["broker-a", "broker-b"]
    active = cluster.start_broker("broker-a")
    wait_for(lambda: "broker active" in active.log(), timeout_s=20, what="broker A")
    standby = cluster.start_broker("broker-b")
    wait_for(
        lambda: "lease held by another broker" in standby.log(),
        timeout_s=20,
        what="broker B to stand by",
    )
    identities = [
        cluster.pool_identity(cluster.start_pool(host))
        for host in ("worker-1", "worker-2")
    ]
    cluster.start_web()
    for identity in identities:
        wait_for(
            lambda identity=identity: f"identity=b'{identity}'" in active.log(),
            timeout_s=30,
            what=f"broker A to register {identity}",
        )
    assert "broker active" not in standby.log()

    journal = tmp_path / "executions.txt"
    accepted = {}
    refusals = []
    rng = random.Random(7)
    web = cluster.hosts["web"]
    started = time.monotonic()
    submitted = []
    for index in range(TASKS):
        time.sleep(max(0.0, started + index * SPREAD_S / TASKS - time.monotonic()))
        submitted.append(
            web.submit(submit_one, cluster, journal, index, accepted, rng, refusals)
        )
        if index == int(TASKS * KILL_AT_S / SPREAD_S):
            active.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            probe = web.submit(first_success_after, cluster, killed_at)
            takeover = web.submit(took_over_after, standby, killed_at)
    for future in submitted:
        future.result()
    takeover_s = takeover.result()
    first_task_s = probe.result()

    records = drain(cluster, list(accepted))
    line, ok, causes = tally(accepted, records, read_runs(journal))
    print(
        f"{line}; standby active after {takeover_s:.2f} s, first task after "
        f"{first_task_s:.2f} s; refused and retried: {len(refusals)}; "
        f"failed: {dict(causes)}"
    )

    assert len(accepted) == TASKS
    assert ok, line + cluster.logs()
    assert ", stuck 0, lost 0," in line
    for identity in identities:
        assert f"identity=b'{identity}'" in standby.log()
    # The lease expires within 1.5 s of the kill, a standby tries every 0.5 s;
    # the rest is margin for a loaded machine.
    assert takeover_s < 3.0
    assert first_task_s < 6.0, cluster.logs()


def test_multihost_broker_cut_from_redis_steps_down_before_its_lease_ends(
    make_cluster,
):
    cluster = make_cluster(curve=True)
    cluster.brokers = ["broker-a", "broker-b"]
    first = cluster.start_broker("broker-a")
    wait_for(lambda: "broker active" in first.log(), timeout_s=20, what="broker A")
    second = cluster.start_broker("broker-b")
    wait_for(
        lambda: "lease held by another broker" in second.log(),
        timeout_s=20,
        what="broker B to stand by",
    )
    cluster.start_pool("worker-1")
    cluster.start_web()
    assert cluster.post("/v1/tasks/echo", {"n": 1}).status_code == 200

    # A still reaches every client, but no longer Redis: it must stop listening
    # by itself, and B take over once the lease expired.
    db = cluster.hosts["db"].address
    cluster.hosts["broker-a"].block(db)
    try:
        wait_for(
            lambda: "giving up being active" in first.log(),
            timeout_s=5,
            what="broker A to step down",
        )
        wait_for(lambda: "broker active" in second.log(), timeout_s=10, what="broker B")
        answer = cluster.post("/v1/tasks/echo", {"n": 2})
        assert answer.status_code == 200, cluster.logs()
    finally:
        cluster.hosts["broker-a"].unblock(db)

    # A stands by again; when B dies, A takes over once more.
    wait_for(
        lambda: first.log().count("broker standing by") == 2,
        timeout_s=10,
        what="broker A to stand by again",
    )
    assert first.alive()
    cluster.processes.remove(second)
    second.stop()
    wait_for(
        lambda: first.log().count("broker active") == 2,
        timeout_s=10,
        what="broker A to take over again",
    )
    answer = cluster.post("/v1/tasks/echo", {"n": 3})
    assert answer.status_code == 200, cluster.logs()
