"""Private hosts for multi-host tests: Linux network namespaces on one bridge.

A switch namespace holds a bridge; each host is a namespace whose ``eth0`` is one
end of a veth pair, the other end a port of the bridge. Addresses are private
(10.77.0.0/24) and exist only inside these namespaces, so nothing of the test
reaches the machine's own network. Cutting a host off sets its bridge port down:
its TCP connections see silence, as when a cable is pulled.

Processes run in a host with ``ip netns exec``. The test process itself reaches
a host through threads that joined its namespace with ``setns(2)`` (which moves
only the calling thread), so HTTP and Redis calls go over the private network.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tests.helpers import ManagedProcess, python_args

T = TypeVar("T")

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    """Run one ``ip`` command; raise with its message if it fails."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=20, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def enter(namespace: str) -> None:
    """Move the calling thread into ``namespace``'s network stack."""
    descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns {namespace}: {os.strerror(error)}")
    finally:
        os.close(descriptor)


def why_namespaces_cannot_be_made() -> str:
    """Empty if this machine lets the test make namespaces, else the reason."""
    probe = f"tgprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (OSError, RuntimeError) as exc:
        return f"network namespaces cannot be made here (needs root and ip): {exc}"
    ip("netns", "del", probe)
    return ""


class Host:
    """One namespace with an address on the private network."""

    def __init__(self, network: Network, name: str, number: int) -> None:
        self.name = name
        self.namespace = f"{network.prefix}-{name}"
        self.address = f"{SUBNET}.{number}"
        self.port = f"{network.prefix}p{number}"  # its port on the bridge
        self._network = network
        self._threads: ThreadPoolExecutor | None = None

    def run(
        self, name: str, command: list[str], env: dict[str, str], log_dir: Path
    ) -> ManagedProcess:
        """Start ``command`` in this host."""
        return ManagedProcess(
            name, ["ip", "netns", "exec", self.namespace, *command], env, log_dir
        )

    def run_python(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path
    ) -> ManagedProcess:
        """Start this interpreter (the project's environment) in this host."""
        return self.run(name, python_args(*args), env, log_dir)

    def call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``function`` in a thread inside this host's network; return its value."""
        return self.submit(function, *args, **kwargs).result()

    def submit(
        self, function: Callable[..., T], *args: object, **kwargs: object
    ) -> Future[T]:
        """Start ``function`` in a thread inside this host's network."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max_workers=24, initializer=enter, initargs=(self.namespace,)
            )
        return self._threads.submit(function, *args, **kwargs)

    def cut(self) -> None:
        """Pull the cable: this host hears nothing and nobody hears it."""
        ip("-n", self._network.switch, "link", "set", self.port, "down")

    def block(self, address: str) -> None:
        """Drop everything this host sends to ``address``: a one-way partition."""
        ip("-n", self.namespace, "route", "add", "blackhole", f"{address}/32")

    def unblock(self, address: str) -> None:
        ip("-n", self.namespace, "route", "del", "blackhole", f"{address}/32")

    def plug(self) -> None:
        """Put the cable back."""
        ip("-n", self._network.switch, "link", "set", self.port, "up")

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)


class Network:
    """A bridge in its own namespace, and the hosts plugged into it."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []

    def create(self) -> None:
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str, number: int) -> Host:
        """A host at 10.77.0.<number>, plugged into the bridge."""
        host = Host(self, name, number)
        self._add_namespace(host.namespace)
        ip(
            "link", "add", "eth0", "netns", host.namespace,
            "type", "veth", "peer", "name", host.port, "netns", self.switch,
        )  # fmt: skip
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        ip("-n", self.switch, "link", "set", host.port, "up")
        self.hosts[name] = host
        return host

    def destroy(self) -> None:
        """Remove every namespace made (their veth pairs go with them)."""
        for host in self.hosts.values():
            host.close()
        for namespace in reversed(self._made):
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", namespace)
        self._made.clear()

    def _add_namespace(self, namespace: str) -> None:
        with contextlib.suppress(RuntimeError):
            ip("netns", "del", namespace)  # left over from a killed run
        ip("netns", "add", namespace)
        self._made.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")


class Capture:
    """Every frame on a host's ``eth0``, read by a raw packet socket in its namespace."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._frames: list[bytes] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the capture did not start")

    def _read(self) -> None:
        enter(self._host.namespace)
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        with raw:
            raw.bind(("eth0", 0))
            raw.settimeout(0.1)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self._frames.append(raw.recv(65535))
                except TimeoutError:
                    continue

    def stop(self, ports: tuple[int, ...]) -> bytes:
        """End the capture; the TCP payload to or from ``ports``, joined."""
        self._stop.set()
        self._thread.join(5)
        return b"".join(tcp_payload(frame, ports) for frame in self._frames)


def tcp_payload(frame: bytes, ports: tuple[int, ...]) -> bytes:
    """The TCP payload of an Ethernet frame carrying IPv4 to or from ``ports``."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return b""
    ip_start = 14
    ip_header = (frame[ip_start] & 0x0F) * 4
    ip_total = int.from_bytes(frame[ip_start + 2 : ip_start + 4], "big")
    tcp_start = ip_start + ip_header
    source = int.from_bytes(frame[tcp_start : tcp_start + 2], "big")
    target = int.from_bytes(frame[tcp_start + 2 : tcp_start + 4], "big")
    if source not in ports and target not in ports:
        return b""
    tcp_header = (frame[tcp_start + 12] >> 4) * 4
    return frame[tcp_start + tcp_header : ip_start + ip_total]
