"""Schemathesis against the OpenAPI document a real stack serves.

Schemathesis reads ``/openapi.json`` from gunicorn and sends every operation
requests generated from it, valid and invalid, then checks each answer against
the same document: no 5xx, only documented statuses, content types, headers and
bodies, valid data accepted, invalid data and missing keys refused, 405 with a
true ``Allow``. Its settings, and the few checks that do not apply to an
operation and why, are in ``tests/schemathesis.toml``. Each failing example it
found is kept as a plain regression test in
``tests/test_contract_regressions.py``.

The command line runs it, not its pytest plugin: the plugin's lazy schemas do
not work with pytest 9.2 (they set ``Function._nodeid``, which pytest dropped).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests

from tests.conftest import RedisServer, Stack
from tests.helpers import ROOT, flush_redis

pytestmark = pytest.mark.slow

KEY = "fuzz-key-0123456789abcdef"
CONFIG = ROOT / "tests" / "schemathesis.toml"
HOOKS = ROOT / "tests" / "schemathesis_hooks.py"
# A run takes 20-30 s on two idle cores; these leave room for a loaded machine.
RUN_TIMEOUT_S = 240
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def fuzzed_stack(
    redis_server_instance: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack on database 8 that requires a key; short waits keep runs short."""
    redis_url = redis_server_instance.url(8)
    flush_redis(redis_url)
    running = Stack(
        redis_url,
        tmp_path_factory.mktemp("fuzz-logs"),
        TASKGATE_API_KEYS=KEY,
        # The shipped example tasks only: the tests' own tasks write to any
        # path they are given, which generated arguments must never reach.
        TASKGATE_TASK_MODULES="worker.tasks",
        TASKGATE_WAIT_DEFAULT_S="1",
        TASKGATE_WAIT_MAX_S="2",
    )
    try:
        yield running.start_all()
    finally:
        running.stop_all()


def run_schemathesis(stack: Stack, work_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the command line on the served document, from a scratch directory."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            "--no-color",
            "--workers",
            "1",
            "--report-junit-path",
            str(work_dir / "junit.xml"),
            stack.url("/openapi.json"),
        ],
        cwd=work_dir,
        env={**os.environ, "TASKGATE_FUZZ_KEY": KEY, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_the_served_document_holds_for_generated_requests(
    fuzzed_stack: Stack, tmp_path: Path
) -> None:
    document = requests.get(fuzzed_stack.url("/openapi.json"), timeout=10).json()
    operations = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    result = run_schemathesis(fuzzed_stack, tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report + fuzzed_stack.logs()

    # Every operation ran, every phase passed and cases were many: a run that
    # silently tested little cannot pass. Schemathesis may leave out the
    # operation that serves the document it reads.
    junit = ElementTree.parse(tmp_path / "junit.xml")
    tested = {case.get("name") for case in junit.iter("testcase")}
    assert operations - {"GET /openapi.json"} <= tested, report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts is not None, report
    assert int(counts.group(1)) == int(counts.group(2)) > 50 * len(operations), report
