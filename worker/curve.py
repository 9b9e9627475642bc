"""CURVE keys from the settings, and the socket options clients and broker share.

ZeroMQ's CURVE mechanism encrypts a link and proves each side's key. The broker
is the CURVE server on both its sockets; web processes and worker pools are
clients that know the broker's public key and hold a key pair of their own,
whose public half the broker must list (see :mod:`worker.gatekeeper`).

Keys live in ZeroMQ certificate files (``name.key`` holds the public key,
``name.key_secret`` both), as ``python -m worker.keys`` writes them. The socket
options are the same on plain and green sockets, so the web side uses this
module too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from conf.settings import Settings
from worker.errors import TaskGateError

logger = logging.getLogger(__name__)

# The ZAP domain the broker's sockets ask the authenticator about.
ZAP_DOMAIN = b"taskgate"


class CurveConfigError(TaskGateError):
    """The CURVE settings name a missing, unreadable or wrong certificate."""


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a web process or worker pool needs to reach a CURVE broker."""

    server_public: bytes
    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The broker's key pair and where the accepted clients' keys are."""

    public: bytes
    secret: bytes
    authorized_dir: Path


def client_keys(settings: Settings) -> ClientKeys | None:
    """The client's keys, or None when CURVE is off; CurveConfigError if unusable."""
    if not settings.curve_broker_key:
        if settings.curve_key:
            # Alone, a client key would leave the link in plain text unnoticed.
            raise CurveConfigError(
                "TASKGATE_CURVE_KEY is set but TASKGATE_CURVE_BROKER_KEY is not: "
                "set both for CURVE, or neither for plain text"
            )
        return None
    server_public, _ = _load("TASKGATE_CURVE_BROKER_KEY", settings.curve_broker_key)
    if not settings.curve_key:
        raise CurveConfigError(
            "TASKGATE_CURVE_KEY is empty: a client of a CURVE broker needs its own "
            "secret certificate"
        )
    public, secret = _load("TASKGATE_CURVE_KEY", settings.curve_key)
    if secret is None:
        raise CurveConfigError(
            f"TASKGATE_CURVE_KEY: {settings.curve_key} holds no secret key "
            "(give the .key_secret file)"
        )
    return ClientKeys(server_public, public, secret)


def server_keys(settings: Settings) -> ServerKeys | None:
    """The broker's keys, or None when CURVE is off; CurveConfigError if unusable."""
    if not settings.curve_broker_key:
        return None
    public, secret = _load("TASKGATE_CURVE_BROKER_KEY", settings.curve_broker_key)
    if secret is None:
        raise CurveConfigError(
            f"TASKGATE_CURVE_BROKER_KEY: {settings.curve_broker_key} holds no secret "
            "key; the broker needs broker.key_secret"
        )
    directory = Path(settings.curve_authorized_dir)
    if not settings.curve_authorized_dir or not directory.is_dir():
        raise CurveConfigError(
            "TASKGATE_CURVE_AUTHORIZED_DIR must name the directory of the accepted "
            f"clients' public certificates (got {settings.curve_authorized_dir!r})"
        )
    return ServerKeys(public, secret, directory)


def secure_client(sock: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client of the broker; call before connect."""
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def secure_server(sock: zmq.Socket[Any], keys: ServerKeys | None) -> None:
    """Make ``sock`` a CURVE server that asks ZAP about each client; before bind."""
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    # Without this a handshake that no ZAP handler answers would pass.
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


# Monitor events of a client socket whose handshake a broker refused: its key
# (AUTH) or its mechanism, plain text against CURVE or the reverse (PROTOCOL).
# Not HANDSHAKE_FAILED_NO_DETAIL: a broker killed mid-handshake causes that one.
REFUSAL_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


def log_refusal(endpoint: bytes, event: int, who: str, curve_on: bool = True) -> None:
    """Say, at ERROR, that a broker refused this client's handshake, and what to do."""
    if curve_on:
        advice = (
            "is its public key in the broker's TASKGATE_CURVE_AUTHORIZED_DIR, and "
            "TASKGATE_CURVE_BROKER_KEY the broker's?"
        )
    else:
        advice = (
            "does the broker require CURVE? Then set TASKGATE_CURVE_BROKER_KEY and "
            "TASKGATE_CURVE_KEY here."
        )
    logger.error(
        "the broker at %s refused this %s's %s handshake (%s): %s Restart after fixing",
        endpoint.decode(errors="replace"),
        who,
        "CURVE" if curve_on else "plain-text",
        zmq.Event(event).name,
        advice,
    )


def report_refusal(
    sock: zmq.Socket[Any], who: str, on_refusal: Callable[[], None], curve_on: bool
) -> threading.Thread:
    """Log once, then call ``on_refusal``, when a broker refuses this client's handshake.

    ZeroMQ does not retry a refused handshake, so without this line a client
    whose key is not listed would just stay silent. A daemon thread reads the
    socket's monitor until the socket is closed; plain ``zmq`` sockets only (the
    web process does the same in a greenlet, see app.dispatch). ``on_refusal``
    runs in that thread.
    """
    monitor = sock.get_monitor_socket(REFUSAL_EVENTS | zmq.EVENT_MONITOR_STOPPED)

    def watch() -> None:
        reported = False
        with monitor:
            while True:
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                if not reported:
                    reported = True
                    log_refusal(event["endpoint"], event["event"], who, curve_on)
                    on_refusal()

    thread = threading.Thread(target=watch, name="curve-refusals", daemon=True)
    thread.start()
    return thread


def reconnect_max_ms(brokers: int) -> int:
    """Longest pause between a client's attempts to connect to one broker.

    With a standby listed, clients keep trying the broker that does not listen;
    a short pause makes them find it within half a second once it takes over.
    """
    return 2000 if brokers <= 1 else 500


def _load(variable: str, path: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveConfigError(f"{variable}: cannot read {path}: {exc}") from None
    return public, secret
