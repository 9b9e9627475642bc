"""``python -m worker.keys DIR NAME...``: make CURVE key pairs for taskgate.

Writes ``DIR/NAME.key`` (the public certificate) and ``DIR/NAME.key_secret`` (the
pair; keep it private) for each name, with ZeroMQ's certificate format so that
the broker's authenticator reads them. Typical names: ``broker``, one per web
host and one per worker host. Copy each client's ``NAME.key`` into the broker's
TASKGATE_CURVE_AUTHORIZED_DIR, and ``broker.key`` to every client host.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import zmq
import zmq.auth


def create(directory: Path, name: str) -> tuple[Path, Path]:
    """Write one key pair; refuse to overwrite an existing one."""
    public = directory / f"{name}.key"
    secret = directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise FileExistsError(f"{public} or {secret} exists already")
    directory.mkdir(parents=True, exist_ok=True)
    made_public, made_secret = zmq.auth.create_certificates(directory, name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def main(argv: list[str] | None = None) -> int:
    """Create the key pairs named on the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m worker.keys", description=__doc__.splitlines()[0]
    )
    parser.add_argument("directory", type=Path, help="where to write the files")
    parser.add_argument("names", nargs="+", help="one key pair per name")
    options = parser.parse_args(argv)

    if not zmq.has("curve"):
        sys.exit("taskgate: this libzmq has no CURVE support")
    for name in options.names:
        if not name.replace("-", "").replace("_", "").isalnum():
            sys.exit(f"taskgate: a key name is letters, digits, - and _: {name!r}")
        try:
            public, secret = create(options.directory, name)
        except FileExistsError as exc:
            sys.exit(f"taskgate: {exc}")
        sys.stdout.write(f"{public}\n{secret}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
