"""Profile a taskgate web process under load with py-spy, and summarize where it goes.

py-spy samples the process from outside (no code change, ``--nonblocking`` so the
process is not paused), while wrk drives it as in the measured runs. These runs
are extra: their numbers never enter the table, since sampling costs the target
some speed. The summary groups samples by the library the running function
lives in, then lists the top functions by own time and by inclusive time.
"""

from __future__ import annotations

import logging
import pstats
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import wrk
from bench.procs import ROOT

logger = logging.getLogger(__name__)

PY_SPY = Path(sys.executable).parent / "py-spy"
TOP = 20
# Samples per second: py-spy's default of 100 leaves few samples in a 10 s run.
RATE_HZ = 250
# Where a frame's file lives (path as shortened by _short_path): prefix, group.
GROUPS = (
    ("redis/", "redis-py client"),
    ("hiredis", "redis-py client"),
    ("zmq/", "pyzmq"),
    ("werkzeug/", "werkzeug"),
    ("flask/", "flask"),
    ("gunicorn/", "gunicorn"),
    ("gevent/", "gevent"),
    ("pydantic", "pydantic"),
    ("app/", "taskgate app/"),
    ("worker/", "taskgate worker/ (protocol, store)"),
    ("conf/", "taskgate conf/"),
)
# Where the standard library lives; cProfile names its files by full path.
_STDLIB = re.compile(r"^.*/lib/python3\.\d+/")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def record(pid: int, load: wrk.Load, out_dir: Path) -> str:
    """Profile ``pid`` during one wrk run of ``load``; the text summary.

    Writes ``taskgate-web.svg`` (flame graph, one run) and ``taskgate-web.txt``
    (collapsed stacks, another run) into ``out_dir``.
    """
    raw = out_dir / "taskgate-web.txt"
    for output, fmt in ((out_dir / "taskgate-web.svg", "flamegraph"), (raw, "raw")):
        spy = subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "--rate",
                str(RATE_HZ),
            ]
            + ["--format", fmt]
            + ["--duration", str(load.duration_s), "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wrk.run(load)
        _, errors = spy.communicate(timeout=load.duration_s + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.strip()}")
    summary = summarize(raw.read_text())
    (out_dir / "taskgate-web-summary.txt").write_text(summary + "\n")
    return summary


def summarize(collapsed: str) -> str:
    """Own time per library group, then top functions by own and inclusive time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        groups[_group(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "py-spy recorded no samples"

    lines = [
        f"{total} samples of the web process while it was busy (idle time excluded)"
    ]
    lines += ["", "own time by library:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in groups.most_common()]
    lines += ["", f"top {TOP} functions by own time:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in own.most_common(TOP)]
    lines += ["", f"top {TOP} functions by inclusive time:"]
    lines += [
        f"  {count / total:6.1%}  {name}" for name, count in inclusive.most_common(TOP)
    ]
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    """``function (file)`` without the line number, so one function is one entry."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({_short_path(match['file'])})"


def _short_path(path: str) -> str:
    """Paths inside site-packages or this repository, relative to them."""
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _group(frame: str) -> str:
    path = frame.rsplit(" (", 1)[-1].rstrip(")")
    for prefix, name in GROUPS:
        if path.startswith(prefix):
            return name
    return "Python stdlib" if "/lib/python3" in path else "other"


def summarize_pool(stats_path: Path, tasks: int) -> str:
    """The pool parent's functions by own time, per task, from cProfile's file.

    Own time only: a function's wait in a system call counts as its own, so
    ``poll`` is the parent's idle wait, and the socket and pipe calls hold what
    the kernel charges for a write that wakes another process.
    """
    stats = pstats.Stats(str(stats_path))
    rows = sorted(
        (
            (own_s, calls, f"{function} ({_stdlib_relative(_short_path(file))})")
            for (file, _, function), (_, calls, own_s, _, _) in stats.stats.items()  # type: ignore[attr-defined]
        ),
        reverse=True,
    )
    total_s = sum(own_s for own_s, _, _ in rows)
    lines = [
        f"cProfile of the worker pool's parent process, {tasks} sync echo tasks "
        f"({total_s / max(1, tasks) * 1e6:,.0f} us of own time per task in all, "
        "waiting included; cProfile's own cost inflates Python functions):",
        f"  {'us/task':>8s} {'calls/task':>10s}  function",
    ]
    for own_s, calls, name in rows[:TOP]:
        lines.append(
            f"  {own_s / max(1, tasks) * 1e6:8.1f} {calls / max(1, tasks):10.2f}  {name}"
        )
    return "\n".join(lines)


def _stdlib_relative(path: str) -> str:
    """A standard library path from its package on (``multiprocessing/connection.py``).

    cProfile names the file of a built-in ``~``; that becomes ``built-in``.
    """
    return "built-in" if path == "~" else _STDLIB.sub("", path)
