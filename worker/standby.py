"""A broker that may be the standby: active only while it holds the lease.

Used when TASKGATE_BROKER_FRONTEND lists several brokers. Web processes and pools
connect to all of them with ``IMMEDIATE`` set, so they send only over completed
connections. A standby therefore does not bind its sockets at all: it tries to
take the lease (:mod:`worker.lease`) every third of a lease, and binds once it
holds it. The active broker renews the lease each third; when it cannot, it
closes its sockets at once, before another broker could take the lease, and goes
back to waiting. So at most one broker listens, and clients find it by the only
connection that completes.

Why this design: no broker-to-broker protocol and no new state, since the
broker's state is rebuilt from what the pools announce and from Redis anyway
(a new active broker asks unknown pools to announce, and its recovery scan
queues the tasks the old one held). Each activation makes a fresh
:class:`~worker.broker.Broker`.

The broker's metrics (:mod:`worker.broker_metrics`) follow the active
:class:`~worker.broker.Broker`; while standing by they report zeros and
``taskgate_broker_active 0``.

Known limit: the lease is checked between routing turns; each Redis call in a turn times out
after a tenth of a lease, but a turn that makes many failing calls (recovery
giving back the tasks of several lost pools while Redis is unreachable) can run
past the lease's last third, and for that long two brokers may listen.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType

import zmq

from conf.settings import Settings
from worker.broker import Broker
from worker.broker_metrics import BrokerCollector
from worker.curve import CurveConfigError
from worker.errors import StoreUnavailableError
from worker.lease import Lease
from worker.store import TaskStore

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 1


def run_standby(
    settings: Settings, store: TaskStore, metrics: BrokerCollector | None = None
) -> int:
    """Wait for the lease, route while it is held, repeat; until SIGTERM or SIGINT."""
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    lease = Lease(store.client, holder, settings.broker_lease_s)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    while not stop.is_set():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info("broker standing by holder=%s", holder)
        if not _wait_for_lease(lease, stop):
            break
        started = time.monotonic()
        try:
            broker = Broker(settings, store)
        except (zmq.ZMQError, CurveConfigError, ValueError) as exc:
            logger.critical("the broker cannot listen: %s", exc)
            _release(lease)
            return EXIT_CANNOT_LISTEN
        logger.info(
            "broker active holder=%s bound after %.3f s",
            holder,
            time.monotonic() - started,
        )
        if metrics is not None:
            metrics.broker = broker
        broker.run(keep_running=lease.keep)
        if metrics is not None:
            metrics.broker = None
        if broker.stopping:
            _release(lease)
            break
    return EXIT_OK


def _wait_for_lease(lease: Lease, stop: threading.Event) -> bool:
    """Try to take the lease every third of it; False if asked to stop first."""
    last_holder = None
    while not stop.is_set():
        if lease.acquire():
            return True
        holder = lease.holder_now()
        if holder != last_holder:
            logger.info("lease held by another broker holder=%s", holder or "?")
            last_holder = holder
        stop.wait(lease.renew_interval_s)
    return False


def _release(lease: Lease) -> None:
    try:
        lease.release()
    except StoreUnavailableError as exc:
        logger.warning("lease not released, it expires by itself: %s", exc)
