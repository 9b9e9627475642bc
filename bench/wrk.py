"""Run wrk against one URL for a bounded time and read its JSON summary line.

wrk is an open-source HTTP load generator written in C: its own cost per request
is small next to a Python server's, so on a 2-core machine it leaves the server
most of the CPU. Errors are wrk's socket errors (connect, read, write, timeout)
plus answers with a status of 400 or more (wrk's "non-2xx" count covers those).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.results import Sample

SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
RESULT_PREFIX = "BENCH_RESULT "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk run: what to request, how hard, and for how long."""

    url: str
    method: str = "GET"
    body: str = ""
    connections: int = 64
    threads: int = 1
    duration_s: int = 10
    # Per-request timeout: a synchronous task call may legitimately take seconds.
    timeout_s: int = 10


def run(load: Load) -> Sample:
    """Drive ``load.url`` and return requests/s, p50/p99 latency and errors."""
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkError("wrk is not installed; run bin/bench, which installs it")

    threads = max(1, min(load.threads, load.connections))
    args = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(load.connections),
        "-d",
        f"{max(1, load.duration_s)}s",
        "--timeout",
        f"{load.timeout_s}s",
        "-s",
        str(SCRIPT),
        load.url,
    ]
    env = {**os.environ, "BENCH_METHOD": load.method, "BENCH_BODY": load.body}
    completed = subprocess.run(
        args,
        env=env,
        capture_output=True,
        text=True,
        timeout=load.duration_s + load.timeout_s + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise WrkError(f"wrk exited {completed.returncode}: {completed.stderr.strip()}")
    return parse(completed.stdout)


def parse(output: str) -> Sample:
    """The Sample in wrk's output, from the line our Lua ``done`` hook prints."""
    for line in output.splitlines():
        if line.startswith(RESULT_PREFIX):
            summary = json.loads(line[len(RESULT_PREFIX) :])
            break
    else:
        raise WrkError(f"wrk printed no summary line:\n{output}")

    duration_s = summary["duration_us"] / 1e6
    errors = sum(
        summary[key] for key in ("connect", "read", "write", "status", "timeout")
    )
    return Sample(
        rate=summary["requests"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=errors,
        count=summary["requests"],
    )
