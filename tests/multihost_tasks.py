"""Tasks for the multi-host tests: each says which test host ran it."""

from __future__ import annotations

import os
import time

from worker.registry import task

# Set by tests.cluster on every pool it starts; children inherit it.
HOST_VARIABLE = "MULTIHOST_TEST_HOST"


@task("tests.where")
def where(seconds: float = 0.0, tag: str = "") -> dict[str, str]:
    """Sleep ``seconds``, then name the host (and echo ``tag``)."""
    time.sleep(seconds)
    return {"host": os.environ.get(HOST_VARIABLE, ""), "tag": tag}
