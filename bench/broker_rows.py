"""The broker row: taskgate's ``worker.broker`` against a minimal ROUTER/ROUTER loop.

Both run as their own process on the same free ports scheme, facing the same
load (:mod:`bench.zmq_load`) in the harness process. Each task costs a broker
five messages (``submit`` in, ``accepted`` out, ``submit`` to a worker, ``reply``
in, ``reply`` out), so messages/s is five times tasks/s. The broker's CPU use
over the run is reported, with the load's and other work's: a broker near one
core is the bottleneck; well below, the load generator or a neighbour is.
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

from bench import cpu, zmq_load
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
        shares = []
        for _ in range(plan.runs):
            sample, share = _run_once(module, plan)
            row.samples.append(sample)
            shares.append(share)
        tasks_per_s = statistics.median(s.rate / MESSAGES_PER_TASK for s in row.samples)
        row.notes.append(f"median {tasks_per_s:,.0f} tasks/s")
        row.notes.append(
            "CPU cores (max over runs): "
            + ", ".join(
                f"{name} {max(s[name] for s in shares):.2f}" for name in shares[0]
            )
        )
    return [taskgate, minimal]


def _run_once(module: str, plan: Plan) -> tuple[Sample, dict[str, float]]:
    """Start the router, drive it for one run, stop it.

    Returns the sample and the cores used over the run by the router process,
    the load thread, the harness process as a whole (the load and its ZeroMQ
    I/O thread) and everything else on the machine.
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
        readers = {
            "broker": cpu.process_tree_s(router.pid),
            "harness": _harness_s,
            "machine": cpu.machine_busy_s,
        }
        before, started = cpu.read(readers), time.monotonic()
        result = zmq_load.drive(
            frontend, backend, plan.duration_s, plan.broker_window, WORKERS, capacity
        )
        after, wall_s = cpu.read(readers), time.monotonic() - started
        router.check_alive()

    used = {name: (after[name] - before[name]) / wall_s for name in readers}
    share = {
        "broker": used["broker"],
        "load thread": result.load_cpu_s / result.elapsed_s,
        "harness": used["harness"],
        "others": max(0.0, used["machine"] - used["broker"] - used["harness"]),
    }
    rate = MESSAGES_PER_TASK * result.tasks / result.elapsed_s
    return Sample(rate=rate, errors=result.rejected, count=result.tasks), share


def _harness_s() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _listening(process: psutil.Process) -> bool:
    return len([c for c in process.net_connections("tcp") if c.status == "LISTEN"]) >= 2
