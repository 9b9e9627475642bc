"""The broker row: taskgate's ``worker.broker`` against a minimal ROUTER/ROUTER loop.

Both run as their own process on the same free ports scheme, facing the same
load (:mod:`bench.zmq_load`) in the harness process. Each task costs a broker
five messages (``submit`` in, ``accepted`` out, ``submit`` to a worker, ``reply``
in, ``reply`` out), so messages/s is five times tasks/s. The broker's CPU use
over the run is reported: near 100 % means the broker is the bottleneck; well
below, the load generator is.
"""

from __future__ import annotations

import logging
import statistics
from contextlib import ExitStack
from pathlib import Path

import psutil

from bench import zmq_load
from bench.plan import Plan
from bench.procs import PYTHON, Service, child_env, free_port, wait_until
from bench.results import Row, Sample

logger = logging.getLogger(__name__)

MESSAGES_PER_TASK = 5
WORKERS = 2


def broker_rows(plan: Plan) -> list[Row]:
    """One row per router: taskgate's broker, then the minimal loop (the limit)."""
    taskgate = Row(
        "broker-taskgate",
        f"taskgate broker alone, window {plan.broker_window}",
        "msgs/s",
        baseline="broker-minimal",
    )
    minimal = Row("broker-minimal", "minimal ROUTER/ROUTER loop (limit)", "msgs/s")
    for row, module in ((taskgate, "worker.broker"), (minimal, "bench.router")):
        logger.info("measuring %s (%d x %ds)", row.label, plan.runs, plan.duration_s)
        cpu_shares = []
        load_shares = []
        for _ in range(plan.runs):
            sample, cpu_share, load_share = _run_once(module, plan)
            row.samples.append(sample)
            cpu_shares.append(cpu_share)
            load_shares.append(load_share)
        tasks_per_s = statistics.median(s.rate / MESSAGES_PER_TASK for s in row.samples)
        row.notes.append(f"median {tasks_per_s:,.0f} tasks/s")
        row.notes.append(
            f"CPU: broker {max(cpu_shares):.0%}, load {max(load_shares):.0%} of a core"
        )
    return [taskgate, minimal]


def _run_once(module: str, plan: Plan) -> tuple[Sample, float, float]:
    """Start the router, drive it for one run, stop it.

    Returns the sample and the CPU shares (of one core) of the router and of the
    load thread over the run.
    """
    frontend = f"tcp://127.0.0.1:{free_port()}"
    backend = f"tcp://127.0.0.1:{free_port()}"
    env = child_env(
        TASKGATE_BROKER_FRONTEND=frontend,
        TASKGATE_BROKER_BACKEND=backend,
        TASKGATE_LOG_LEVEL="WARNING",
    )
    args = [PYTHON, "-m", module]
    if module == "bench.router":
        args += ["--frontend", frontend, "--backend", backend]
    with ExitStack() as stack:
        router = Service(module.replace(".", "-"), args, env, Path(plan.log_dir))
        stack.callback(router.stop)
        process = psutil.Process(router.pid)
        # The router binds within a moment; DEALERs connect whenever it is up.
        wait_until(lambda: _listening(process), 30, f"{module} to bind")
        # Capacity per echo worker: enough free slots that the window, not the
        # workers, bounds the tasks in flight.
        capacity = max(1, plan.broker_window // WORKERS)
        before = process.cpu_times()
        result = zmq_load.drive(
            frontend, backend, plan.duration_s, plan.broker_window, WORKERS, capacity
        )
        after = process.cpu_times()
        router.check_alive()

    cpu_s = (after.user - before.user) + (after.system - before.system)
    rate = MESSAGES_PER_TASK * result.tasks / result.elapsed_s
    sample = Sample(rate=rate, errors=result.rejected, count=result.tasks)
    return sample, cpu_s / result.elapsed_s, result.load_cpu_s / result.elapsed_s


def _listening(process: psutil.Process) -> bool:
    return len([c for c in process.net_connections("tcp") if c.status == "LISTEN"]) >= 2
