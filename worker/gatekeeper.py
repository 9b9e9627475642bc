"""The broker's door: which CURVE clients may connect, and a log of those refused.

Two background threads, so that checking a key or logging a refusal never holds
up routing:

- pyzmq's ZAP authenticator (:class:`zmq.auth.thread.ThreadAuthenticator`),
  answering the broker's sockets for every CURVE handshake. A client is accepted
  when its public key is in a certificate (``*.key``) of the authorized
  directory. An unknown key makes it read the directory again (at most once a
  second), so a host added later needs no broker restart.
- a watcher of the sockets' monitor events, which notices peers whose handshake
  failed for another reason, such as a plain-text (non-CURVE) client.

Each refused peer is logged once at WARNING: per address and key for a refused
key. Known limit: ZeroMQ's monitor events do not tell which address a failed
plain-text handshake came from, so those are logged once per broker socket, and
then as a count at most once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from worker.curve import ZAP_DOMAIN, ServerKeys

logger = logging.getLogger(__name__)

RELOAD_MIN_INTERVAL_S = 1.0
REFUSAL_SUMMARY_INTERVAL_S = 60.0
# Refused (address, key) pairs remembered so each is logged once; a bound, so a
# flood of made-up keys cannot grow the broker's memory.
MAX_REMEMBERED_REFUSALS = 10_000
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class _KeyList:
    """The accepted public keys, read from the authorized directory."""

    def __init__(self, keys: ServerKeys) -> None:
        self._directory = keys.authorized_dir
        self._lock = threading.Lock()
        self._keys: set[bytes] = set()
        self._read_at = 0.0
        self.peer_address = ""
        self._refused: set[tuple[str, bytes]] = set()
        self.reload()

    def reload(self) -> None:
        try:
            found = zmq.auth.load_certificates(self._directory)
        except (OSError, ValueError) as exc:
            logger.error("cannot read authorized keys in %s: %s", self._directory, exc)
            return
        with self._lock:
            self._keys = set(found)
            self._read_at = time.monotonic()

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP's question: may the client with this (Z85) public key connect?"""
        if key in self._keys:
            return True
        if time.monotonic() - self._read_at >= RELOAD_MIN_INTERVAL_S:
            self.reload()
            if key in self._keys:
                return True
        peer = (self.peer_address, key)
        if peer not in self._refused and len(self._refused) < MAX_REMEMBERED_REFUSALS:
            self._refused.add(peer)
            logger.warning(
                "refused a client whose key is not authorized address=%s key=%s%s",
                self.peer_address,
                key.decode(),
                (
                    "; further refusals are not logged"
                    if len(self._refused) == MAX_REMEMBERED_REFUSALS
                    else ""
                ),
            )
        return False


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, noting each request's peer address for the log."""

    key_list: _KeyList | None = None

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if self.key_list is not None and len(msg) > 3:
            self.key_list.peer_address = msg[3].decode(errors="replace")
        await super().handle_zap_message(msg)


class Gatekeeper:
    """ZAP authentication and refusal logging for the broker's CURVE sockets."""

    def __init__(self, context: zmq.Context[Any], keys: ServerKeys) -> None:
        self._context = context
        self._key_list = _KeyList(keys)
        self._auth = _Authenticator(context, log=logging.getLogger("zmq.auth"))
        self._auth.key_list = self._key_list
        self._monitors: dict[zmq.Socket[Any], str] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Answer ZAP requests; must run before the sockets bind."""
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN.decode(), self._key_list)

    def watch(self, sockets: dict[str, zmq.Socket[Any]]) -> None:
        """Log the failed handshakes of these sockets, keyed by their address."""
        for address, sock in sockets.items():
            self._monitors[sock.get_monitor_socket(HANDSHAKE_FAILURES)] = address
        self._watcher = threading.Thread(
            target=self._watch_forever, name="gatekeeper", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        """Stop both threads; call before closing the watched sockets."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self._auth.stop()

    def _watch_forever(self) -> None:
        poller = zmq.Poller()
        for monitor in list(self._monitors):
            poller.register(monitor, zmq.POLLIN)
        refused = dict.fromkeys(self._monitors.values(), 0)
        reported = dict.fromkeys(self._monitors.values(), 0)
        next_summary = time.monotonic() + REFUSAL_SUMMARY_INTERVAL_S
        while not self._stopping.is_set():
            for monitor, _ in poller.poll(200):
                event = recv_monitor_message(monitor)
                address = self._monitors[monitor]
                refused[address] += 1
                if refused[address] == 1:
                    reported[address] = 1
                    logger.warning(
                        "refused a peer whose handshake failed (not CURVE, or the "
                        "wrong broker key) socket=%s event=%s",
                        address,
                        zmq.Event(event["event"]).name,
                    )
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + REFUSAL_SUMMARY_INTERVAL_S
                for address, count in refused.items():
                    if count > reported[address]:
                        logger.warning(
                            "refused %d failed handshakes so far socket=%s",
                            count,
                            address,
                        )
                    reported[address] = count
        for monitor in self._monitors:
            monitor.close(linger=0)
