"""The broker's door: which CURVE clients may connect, and a log of those refused.

Two background threads, so that checking a key or logging a refusal never holds
up routing:

- pyzmq's ZAP authenticator (:class:`zmq.auth.thread.ThreadAuthenticator`),
  answering the broker's sockets for every CURVE handshake. A client is accepted
  when its public key is in a certificate (``*.key``) of the authorized
  directory. An unknown key makes it read the directory again (at most once a
  second), so a host added later needs no broker restart.
- a watcher of the sockets' monitor events (:mod:`worker.handshakes`), which
  notices peers whose handshake failed for another reason, such as a plain-text
  (non-CURVE) client.

Each refused peer is logged once at WARNING: per address and key for a refused
key, per IP address for a failed handshake.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from worker.curve import ZAP_DOMAIN, ServerKeys
from worker.handshakes import HandshakeWatcher

logger = logging.getLogger(__name__)

RELOAD_MIN_INTERVAL_S = 1.0
# Refused (address, key) pairs remembered so each is logged once; a bound, so a
# flood of made-up keys cannot grow the broker's memory.
MAX_REMEMBERED_REFUSALS = 10_000


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
        self._watcher: HandshakeWatcher | None = None

    def start(self) -> None:
        """Answer ZAP requests; must run before the sockets bind."""
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN.decode(), self._key_list)

    def watch(self, sockets: dict[str, zmq.Socket[Any]]) -> None:
        """Log the peers that fail a handshake on these sockets (keyed by address)."""
        self._watcher = HandshakeWatcher(sockets)
        self._watcher.start()

    def stop(self) -> None:
        """Stop both threads; call before closing the watched sockets."""
        if self._watcher is not None:
            self._watcher.stop()
        self._auth.stop()
