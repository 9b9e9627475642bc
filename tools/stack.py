"""Run the whole stack on one machine: the Procfile's processes, plus Redis if needed.

``bin/run`` calls this. With ``REDIS_URL`` unset it starts an embedded Redis with
an append-only file under ``.taskgate/redis`` and points the stack at it. The
Procfile's processes are run by honcho, which prefixes and colours their logs and
stops them all on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from tools import redis_server

ROOT = Path(__file__).resolve().parent.parent


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

    env = dict(os.environ)
    # Procfile lines say `gunicorn` and `python`: make them this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = env.get("PORT", "8000")
    # Serve this machine only, unless told otherwise.
    env.setdefault("TASKGATE_HOST", "127.0.0.1")

    redis_process = None
    if not env.get("REDIS_URL"):
        try:
            redis_process = redis_server.start(
                options.redis_port, ROOT / ".taskgate" / "redis", durable=True
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
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-p", port],
        cwd=ROOT,
        env=env,
    )
    try:
        return honcho.wait()
    except KeyboardInterrupt:
        honcho.send_signal(signal.SIGTERM)
        return honcho.wait(60)
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
