"""Run the whole stack on one machine: the Procfile's processes, plus Redis if needed.

``bin/run`` calls this. With ``REDIS_URL`` unset it starts an embedded Redis with
an append-only file under ``.taskgate/redis`` and points the stack at it. The
Procfile's processes are run by honcho, which prefixes and colours their logs and
stops them all on Ctrl-C.

Honcho does not always stop them: killed, or stuck writing to a closed pipe (Ctrl-C
on ``bin/run | tee run.log`` kills tee first), it leaves web, broker and workers
running. Honcho starts each of them in a session of its own, so no one process
group holds them all; instead this process becomes their "child subreaper" (Linux),
so that they stay its descendants when honcho dies, and on the way out it sends
TERM, then KILL after a grace period, to every descendant still alive.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import psutil

from conf.settings import load
from tools import redis_server

ROOT = Path(__file__).resolve().parent.parent
# How long honcho may take to stop its processes (it KILLs them after 5 s), and
# how long they then have between our TERM and our KILL.
HONCHO_STOP_S = 15.0
TERM_GRACE_S = 10.0
_PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    """Start Redis when needed, then honcho; return honcho's exit code."""
    parser = argparse.ArgumentParser(
        description="Run taskgate's web, broker and workers."
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=6379,
        help="port of the embedded Redis (used when REDIS_URL is unset)",
    )
    options = parser.parse_args()
    # A bad setting stops here, in one line, before any process starts.
    settings = load()

    env = dict(os.environ)
    # Procfile lines say `gunicorn` and `python`: make them this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = str(settings.port)
    # Serve this machine only, unless told otherwise.
    env.setdefault("TASKGATE_HOST", "127.0.0.1")

    redis_process = None
    if not env.get("REDIS_URL"):
        try:
            redis_process = redis_server.start(
                options.redis_port, ROOT / ".taskgate" / "redis", durable=True
            )
        except redis_server.PortInUseError:
            sys.exit(
                f"taskgate: port {options.redis_port} is in use, so the embedded "
                "Redis cannot start there; pass --redis-port PORT, or set REDIS_URL "
                "to use a Redis that runs already"
            )
        except redis_server.DataDirInUseError as exc:
            sys.exit(
                f"taskgate: {exc}; a second stack in this clone must set REDIS_URL "
                "(to that Redis or another one)"
            )
        except RuntimeError as exc:
            sys.exit(
                f"taskgate: cannot start the embedded Redis on port "
                f"{options.redis_port} ({exc}); set REDIS_URL or pass --redis-port"
            )
        env["REDIS_URL"] = f"redis://127.0.0.1:{options.redis_port}/0"
        print(f"taskgate: embedded Redis at {env['REDIS_URL']}", flush=True)

    print(f"taskgate: API at http://127.0.0.1:{port}", flush=True)
    # A TERM to this process (a supervisor, `timeout`) stops the stack as Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    _adopt_orphans()
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-p", port],
        cwd=ROOT,
        env=env,
    )
    try:
        return honcho.wait()
    except KeyboardInterrupt:
        honcho.send_signal(signal.SIGTERM)
        try:
            return honcho.wait(HONCHO_STOP_S)
        except subprocess.TimeoutExpired:
            return 1
    finally:
        # Another Ctrl-C must not cut the clean-up short; it is bounded anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_descendants(exclude=redis_process.pid if redis_process else None)
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)


def _adopt_orphans() -> None:
    """Make processes orphaned below us (honcho died) our children, not init's.

    Known limit: Linux only; elsewhere, processes orphaned by a dead honcho are
    not found and keep running.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _stop_descendants(exclude: int | None) -> None:
    """TERM every process started below this one (but ``exclude``), then KILL."""
    processes = [
        process
        for process in psutil.Process().children(recursive=True)
        if process.pid != exclude
    ]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=TERM_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
