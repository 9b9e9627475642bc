"""Taskgate across hosts (network namespaces), CURVE on: flow, keys, capture, cut-off.

Every test here builds its hosts itself (see tests.netns) and needs root; as
root they run, and a machine without namespaces skips them naming the reason.
"""

import uuid

import pytest

from tests.cluster import BACKEND_PORT, FRONTEND_PORT, make_cluster, network
from tests.helpers import wait_for
from tests.netns import Capture

__all__ = ["make_cluster", "network"]  # fixtures, imported for pytest

pytestmark = pytest.mark.slow


def broker_knows(cluster, broker, identity):
    return wait_for(
        lambda: f"worker ready identity=b'{identity}'" in broker.log(),
        timeout_s=30,
        what=f"the broker to register {identity}",
    )


def run_where(cluster, count, tag):
    """Run ``count`` tasks one after another; return the hosts that ran them."""
    hosts = []
    for index in range(count):
        answer = cluster.post("/v1/tasks/tests.where", {"tag": f"{tag}-{index}"})
        assert answer.status_code == 200, answer.text + cluster.logs()
        assert answer.json()["status"] == "succeeded"
        assert answer.json()["result"]["tag"] == f"{tag}-{index}"
        hosts.append(answer.json()["result"]["host"])
    return hosts


def test_multihost_tasks_cross_hosts_with_curve_a_late_host_works_at_once_a_stranger_never(
    make_cluster,
):
    cluster = make_cluster(curve=True)
    broker = cluster.start_broker()
    first = cluster.pool_identity(cluster.start_pool("worker-1"))
    stranger_pool = cluster.start_pool("worker-3", key_name="stranger")
    stranger = cluster.pool_identity(stranger_pool)
    cluster.start_web()
    broker_knows(cluster, broker, first)

    before = run_where(cluster, 6, "before")
    second = cluster.pool_identity(cluster.start_pool("worker-2"))
    broker_knows(cluster, broker, second)
    after = run_where(cluster, 6, "after")

    assert set(before) == {"worker-1"}
    # The host that joined shares the load from its first task on.
    assert set(after) == {"worker-1", "worker-2"}
    assert after.count("worker-2") >= 2
    assert f"identity=b'{stranger}'" not in broker.log()
    assert broker.log().count("key is not authorized") == 1, broker.log()
    # Refused, the stranger stops rather than announce names it will never serve.
    wait_for(lambda: not stranger_pool.alive(), what="the refused pool to stop")
    assert stranger_pool.log().count("refused this worker pool's CURVE handshake") == 1


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plain"])
def test_multihost_capture_on_broker_ports_shows_payload_only_without_curve(
    make_cluster, curve
):
    cluster = make_cluster(curve=curve)
    broker = cluster.start_broker()
    broker_knows(cluster, broker, cluster.pool_identity(cluster.start_pool("worker-1")))
    cluster.start_web()
    marker = f"MARKER-{uuid.uuid4().hex}"

    capture = Capture(cluster.hosts["broker-a"])
    try:
        answer = cluster.post("/v1/tasks/echo", {"secret": marker})
    finally:
        seen = capture.stop(ports=(FRONTEND_PORT, BACKEND_PORT))

    assert answer.status_code == 200, cluster.logs()
    assert answer.json()["result"] == {"secret": marker}
    # The payload crossed the broker twice (in, out) and came back in the reply.
    assert len(seen) > 3 * len(marker)
    assert (marker.encode() in seen) is not curve


def test_multihost_worker_host_cut_off_mid_task_its_tasks_finish_on_the_other(
    make_cluster,
):
    cluster = make_cluster(curve=True)
    broker = cluster.start_broker()
    lost = cluster.pool_identity(cluster.start_pool("worker-1"))
    kept = cluster.pool_identity(cluster.start_pool("worker-2"))
    cluster.start_web()
    broker_knows(cluster, broker, lost)
    broker_knows(cluster, broker, kept)

    ids = []
    for index in range(4):
        answer = cluster.post(
            "/v1/tasks/tests.where", {"seconds": 2, "tag": str(index)}, wait="0"
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    running = wait_for(
        lambda: (
            all(cluster.record(i)["status"] == "running" for i in ids)
            and {i: cluster.record(i)["owner"] for i in ids}
        ),
        timeout_s=10,
        what="all four tasks to run",
    )
    on_lost_host = [i for i, owner in running.items() if owner == lost]
    assert on_lost_host, running

    cluster.hosts["worker-1"].cut()

    wait_for(
        lambda: all(cluster.record(i)["status"] == "succeeded" for i in ids),
        timeout_s=30,
        interval_s=0.2,
        what="every task to succeed",
    )
    for task_id in on_lost_host:
        record = cluster.record(task_id)
        assert '"host":"worker-2"' in record["result"].replace(" ", ""), record
        assert record["attempts"] == "2"
    assert "worker missed heartbeats, forgotten" in broker.log()
