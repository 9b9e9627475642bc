"""CPU time per part of a system during a row: which process does the row saturate?

On two cores the parts of a system (web processes, broker, workers, Redis, and wrk
itself) compete for the same CPU, so a rate alone does not say what limits it.
Each part's CPU seconds are read before and after every measured run; the row's
note gives each part's average use in cores.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import psutil
import redis

# Part name -> cumulative CPU seconds of that part so far.
Meter = dict[str, Callable[[], float]]


def process_tree_s(pid: int) -> Callable[[], float]:
    """A reader of the CPU seconds of ``pid`` and all its live descendants."""

    def read() -> float:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    return read


def redis_s(url: str) -> Callable[[], float]:
    """A reader of the CPU seconds the Redis server at ``url`` has used."""

    def read() -> float:
        client = redis.Redis.from_url(url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return read


def wrk_s() -> float:
    """CPU seconds of this process's finished children: wrk, once it has exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine have been busy (any process), from /proc/stat.

    Busy minus the parts' own use is what other work on the machine took
    during a run: on a shared machine, a row with "others" near a core is
    noisy, whatever its spread says.
    """
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def read(meter: Meter) -> dict[str, float]:
    """Every part's cumulative CPU seconds now."""
    return {name: reader() for name, reader in meter.items()}


def describe(
    used_s: dict[str, float], machine_s: float, elapsed_s: float, count: int
) -> str:
    """Cores each part and all other work used over ``elapsed_s``; ``count`` per CPU-s.

    ``machine_s`` is the whole machine's busy time over the same runs. The
    count per CPU second of the parts is robust to other work on the machine: a
    neighbour that takes CPU lowers the rate, much less this figure.
    """
    total_s = sum(used_s.values())
    if elapsed_s <= 0 or total_s <= 0:
        return ""
    shares = {**used_s, "others": max(0.0, machine_s - total_s)}
    parts = ", ".join(
        f"{name} {seconds / elapsed_s:.2f}" for name, seconds in shares.items()
    )
    return f"CPU cores: {parts}; {count / total_s:,.0f} per CPU-s"
