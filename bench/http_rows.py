"""The HTTP rows driven by wrk: the ceiling, taskgate sync and async, Celery.

Each row first proves its endpoint answers correctly (status and JSON result),
then warms up, then runs wrk ``plan.runs`` times. Async rows queue work faster
than the workers finish it, so before each run the previous runs' backlog is
drained: every run starts from an idle system.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from bench import cpu, probe, wrk
from bench.plan import Plan
from bench.procs import StartError, wait_until
from bench.results import Row
from bench.taskgate import Taskgate

logger = logging.getLogger(__name__)

ECHO_PATH = "/v1/tasks/echo"
ECHO_BODY = '{"n": 1}'
ECHO_RESULT = {"n": 1}
DRAIN_TIMEOUT_S = 300.0


def measure(
    row: Row,
    load: wrk.Load,
    plan: Plan,
    before_run: Callable[[], None] | None = None,
    meter: cpu.Meter | None = None,
) -> Row:
    """Warm up, then add one wrk sample per run to ``row``.

    With a ``meter``, the note says how many cores each part used during the
    runs (the warm-up and ``before_run`` excluded); wrk's own use is added.
    """
    logger.info("measuring %s (%d x %ds)", row.label, plan.runs, load.duration_s)
    if plan.warmup_s:
        wrk.run(replace(load, duration_s=plan.warmup_s))
    meter = {**meter, "wrk": cpu.wrk_s} if meter is not None else {}
    used_s = dict.fromkeys(meter, 0.0)
    machine_s = elapsed_s = 0.0
    for _ in range(plan.runs):
        if before_run is not None:
            before_run()
        before, busy, started = cpu.read(meter), cpu.machine_busy_s(), time.monotonic()
        row.samples.append(wrk.run(load))
        after = cpu.read(meter)
        machine_s += cpu.machine_busy_s() - busy
        elapsed_s += time.monotonic() - started
        for name in meter:
            used_s[name] += after[name] - before[name]
    if meter:
        count = sum(sample.count for sample in row.samples)
        row.notes.append(cpu.describe(used_s, machine_s, elapsed_s, count))
    return row


def echo_load(base_url: str, plan: Plan, connections: int, query: str = "") -> wrk.Load:
    """POST the echo body to ``base_url``'s echo route."""
    return wrk.Load(
        base_url + ECHO_PATH + query,
        "POST",
        ECHO_BODY,
        connections,
        plan.wrk_threads,
        plan.duration_s,
    )


def check_sync_echo(base_url: str, what: str) -> str:
    """Probe a synchronous echo; the id of the finished task."""
    body = probe.expect(
        probe.call("POST", base_url + ECHO_PATH, ECHO_RESULT), 200, what
    )
    probe.expect_equal(body.get("status"), "succeeded", f"{what} status")
    probe.expect_equal(body.get("result"), ECHO_RESULT, f"{what} result")
    return str(body["id"])


def check_async_echo(base_url: str, what: str) -> str:
    """Probe an async echo submit (202 with Location); the task id."""
    answer = probe.call("POST", base_url + ECHO_PATH + "?wait=0", ECHO_RESULT)
    body = probe.expect(answer, 202, what)
    probe.expect_equal(answer.headers.get("Location"), f"/v1/tasks/{body['id']}", what)
    return str(body["id"])


def ceiling_rows(base_url: str, plan: Plan, meter: cpu.Meter) -> list[Row]:
    """The bare Flask endpoint at the chosen connections and, for latency, at one."""
    check_sync_echo(base_url, "ceiling echo")
    rows = []
    if plan.wants("ceiling"):
        row = Row(
            f"ceiling@{plan.connections}",
            _label("ceiling Flask", plan.connections),
            "req/s",
        )
        load = echo_load(base_url, plan, plan.connections)
        rows.append(measure(row, load, plan, meter=meter))
    if plan.wants("latency"):
        row = Row("ceiling@1", _label("ceiling Flask", 1), "req/s")
        rows.append(measure(row, echo_load(base_url, plan, 1), plan, meter=meter))
    return rows


def taskgate_rows(taskgate: Taskgate, plan: Plan) -> list[Row]:
    """taskgate's synchronous echo, async submit and task read."""
    base_url = taskgate.base_url
    rows: list[Row] = []
    if plan.wants("sync", "latency"):
        check_sync_echo(base_url, "taskgate sync echo")
    if plan.wants("sync"):
        row = Row(
            f"sync@{plan.connections}",
            _label("taskgate sync echo", plan.connections),
            "req/s",
            baseline=f"ceiling@{plan.connections}",
        )
        load = echo_load(base_url, plan, plan.connections)
        rows.append(measure(row, load, plan, meter=taskgate.meter()))
    if plan.wants("latency"):
        row = Row(
            "sync@1", _label("taskgate sync echo", 1), "req/s", baseline="ceiling@1"
        )
        load = echo_load(base_url, plan, 1)
        rows.append(measure(row, load, plan, meter=taskgate.meter()))
    if plan.wants("async"):
        rows += _taskgate_async_rows(taskgate, plan)
    return rows


def _taskgate_async_rows(taskgate: Taskgate, plan: Plan) -> list[Row]:
    base_url = taskgate.base_url
    task_id = check_async_echo(base_url, "taskgate async submit")
    # The probe's task must end before its record can serve the GET row.
    record = probe.expect(
        probe.call("GET", f"{base_url}/v1/tasks/{task_id}?wait=10"),
        200,
        "taskgate task read",
    )
    probe.expect_equal(record.get("result"), ECHO_RESULT, "taskgate task read result")

    def drain() -> None:
        drain_backlog(taskgate.unfinished, "taskgate")

    submit = Row(
        "async-submit",
        _label("taskgate async submit (202)", plan.connections),
        "req/s",
        baseline=f"ceiling@{plan.connections}",
    )
    load = echo_load(base_url, plan, plan.connections, "?wait=0")
    measure(submit, load, plan, drain, taskgate.meter())
    drain()
    read = Row(
        "async-get",
        _label("taskgate GET finished task", plan.connections),
        "req/s",
        baseline=f"ceiling@{plan.connections}",
    )
    load = wrk.Load(
        f"{base_url}/v1/tasks/{task_id}",
        connections=plan.connections,
        threads=plan.wrk_threads,
        duration_s=plan.duration_s,
    )
    return [submit, measure(read, load, plan, meter=taskgate.meter())]


def celery_rows(
    base_url: str, plan: Plan, pool: str, backlog: Callable[[], int], meter: cpu.Meter
) -> list[Row]:
    """Celery's synchronous echo and, for prefork, its async submit."""
    check_sync_echo(base_url, f"celery {pool} sync echo")
    sync = Row(
        f"celery-{pool}-sync",
        _label(f"celery {pool} sync echo", plan.connections),
        "req/s",
        baseline=f"ceiling@{plan.connections}",
    )
    load = echo_load(base_url, plan, plan.connections)
    rows = [measure(sync, load, plan, meter=meter)]
    if pool == "prefork":
        check_async_echo(base_url, "celery async submit")

        def drain() -> None:
            drain_backlog(backlog, "celery")

        submit = Row(
            "celery-prefork-async",
            _label("celery prefork async submit (202)", plan.connections),
            "req/s",
            baseline=f"ceiling@{plan.connections}",
        )
        load = echo_load(base_url, plan, plan.connections, "?wait=0")
        rows.append(measure(submit, load, plan, drain, meter))
        drain()
    return rows


def drain_backlog(waiting: Callable[[], int], system: str) -> None:
    """Wait until ``waiting()`` reaches zero (queued work is done); warn on timeout."""
    try:
        wait_until(lambda: waiting() == 0, DRAIN_TIMEOUT_S, f"{system} backlog", 0.2)
    except StartError:
        logger.warning("%s backlog not drained: %d waiting", system, waiting())


def _label(what: str, connections: int) -> str:
    return f"{what}, {connections} conn"
