"""The benchmark harness still works: ``bin/bench --smoke`` exits 0.

The smoke mode starts every system the benchmark compares (the ceiling app,
taskgate, Celery in both pools, the brokers alone) for about a second each and
checks only that each answered correctly, never how fast. ``bin/bench`` installs
what the bench alone needs (``bench/requirements.txt``, and wrk from Debian's
packages) when it is missing, so a clean CI machine runs this test too.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

# The run itself takes about 40 s; a clean machine first installs Celery and wrk.
SMOKE_TIMEOUT_S = 480


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_bench_smoke_run_exits_zero(tmp_path):
    completed = subprocess.run(
        [str(ROOT / "bin" / "bench"), "--smoke", "--log-dir", str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )

    output = completed.stdout[-6000:] + completed.stderr[-6000:]
    assert completed.returncode == 0, output
    assert "FAILED" not in completed.stdout, output
