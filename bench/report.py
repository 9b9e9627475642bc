"""The results table (for the terminal and for RESULTS.md) and the machine's description.

Numbers from a benchmark mean little without the machine they came from, so the
Markdown report always carries the CPU model, cores, memory, kernel, Python and
the versions of the packages that do the work.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable

from bench.plan import Plan
from bench.results import Row

COLUMNS = (
    "#",
    "row",
    "unit",
    "median",
    "spread (min-max)",
    "p50 ms",
    "p99 ms",
    "errors",
    "ratio",
    "notes",
)

PACKAGES = (
    "flask",
    "gunicorn",
    "gevent",
    "pyzmq",
    "redis",
    "hiredis",
    "orjson",
    "celery",
    "kombu",
    "psutil",
)


def table_cells(rows: Iterable[Row]) -> list[list[str]]:
    """One list of cell texts per row, in :data:`COLUMNS` order."""
    rows = list(rows)
    by_key = {row.key: row for row in rows}
    cells = []
    for number, row in enumerate(rows, start=1):
        if row.missing is not None:
            cells.append(
                [
                    str(number),
                    row.label,
                    row.unit,
                    row.missing,
                    *[""] * 5,
                    "; ".join(row.notes),
                ]
            )
            continue
        spread = row.rate_spread
        cells.append(
            [
                str(number),
                row.label,
                row.unit,
                _number(row.rate),
                f"{_number(spread[0])}-{_number(spread[1])}" if spread else "",
                _number(row.p50_ms),
                _number(row.p99_ms),
                str(row.errors),
                _ratio(row.ratio(by_key)),
                "; ".join(row.notes),
            ]
        )
    return cells


def render_text(rows: Iterable[Row]) -> str:
    """A fixed-width table for the terminal."""
    cells = [list(COLUMNS), *table_cells(rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for index, line in enumerate(cells):
        lines.append(
            "  ".join(
                text.ljust(width) for text, width in zip(line, widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_markdown(rows: Iterable[Row]) -> str:
    """The same table in Markdown."""
    cells = table_cells(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [
        "| " + " | ".join(text.replace("|", "/") for text in line) + " |"
        for line in cells
    ]
    return "\n".join(lines)


def describe_machine() -> list[str]:
    """Bullet lines: CPU, cores, memory, kernel, OS, Python, package versions, date."""
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return [
        f"CPU: {_cpu_model()}, {os.cpu_count()} cores",
        f"memory: {_memory_gib():.1f} GiB",
        f"kernel: {platform.system()} {platform.release()}; OS: {_os_name()}",
        f"Python: {platform.python_version()} ({platform.python_implementation()})",
        f"packages: {versions}",
        f"wrk: {_wrk_version()}",
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _loads(loads: tuple[float, float, float]) -> str:
    return "/".join(f"{load:.2f}" for load in loads)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _cpu_model() -> str:
    try:
        output = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    return 0.0


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    try:
        output = subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True, check=False
        )
    except OSError:
        return "not installed"
    first = (output.stdout or output.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def render_results(
    rows: list[Row],
    command: str,
    plan: Plan,
    failures: list[str],
    extras: list[str],
    load_before: tuple[float, float, float],
) -> str:
    """The whole RESULTS.md: how it was run, on what, the table, and what failed.

    ``load_before`` is the load average when the run began: other work on the
    machine competes for the same cores and lowers every row.
    """
    lines = ["# taskgate benchmark results", ""]
    lines += [f"Command: `{command}`", ""]
    lines += [
        f"Runs per row: {plan.runs} x {plan.duration_s} s (after a {plan.warmup_s} s warm-up); "
        f"wrk {plan.wrk_threads} thread(s); web: gunicorn -c conf/gunicorn.conf.py, "
        f"{plan.web_processes} gevent processes; {plan.worker_processes} worker processes.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {line}" for line in describe_machine()]
    after = os.getloadavg()
    lines.append(
        f"- load average (1/5/15 min): {_loads(load_before)} before the run, "
        f"{_loads(after)} after it (the bench's own load included)"
    )
    lines += ["", "## Results", "", render_markdown(rows), ""]
    if extras:
        lines += [
            "## Profile",
            "",
            "```",
            *"\n".join(extras).strip().splitlines(),
            "```",
            "",
        ]
    if failures:
        lines += ["## Failures", ""] + [f"- {failure}" for failure in failures] + [""]
    return "\n".join(lines)
