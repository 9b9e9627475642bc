"""What a measurement produced: one Sample per run, and a Row per table line.

A row keeps every run's sample rather than a single number, so the table can
show the median and the spread (min-max) and a reader can see how noisy a
2-core machine shared with other work is.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """One run: a rate per second in the row's unit, latency and error counts."""

    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    # Requests, tasks or messages counted in the run (not per second).
    count: int = 0


@dataclass(slots=True)
class Row:
    """One line of the table.

    ``ratio`` is this row's median rate over a reference: the median of the row
    named ``baseline`` times ``baseline_scale`` (linear scaling), or the fixed
    number ``reference`` (how many were asked for).
    """

    key: str
    label: str
    unit: str
    samples: list[Sample] = field(default_factory=list)
    baseline: str | None = None
    baseline_scale: float = 1.0
    reference: float | None = None
    notes: list[str] = field(default_factory=list)
    # Set when the row could not be measured; printed instead of numbers.
    missing: str | None = None

    @property
    def rate(self) -> float | None:
        """Median rate over the runs, None without runs."""
        return _median([sample.rate for sample in self.samples])

    @property
    def rate_spread(self) -> tuple[float, float] | None:
        """(min, max) rate over the runs."""
        rates = [sample.rate for sample in self.samples]
        return (min(rates), max(rates)) if rates else None

    @property
    def p50_ms(self) -> float | None:
        """Median over runs of each run's p50 latency."""
        return _median([s.p50_ms for s in self.samples if s.p50_ms is not None])

    @property
    def p99_ms(self) -> float | None:
        """Median over runs of each run's p99 latency."""
        return _median([s.p99_ms for s in self.samples if s.p99_ms is not None])

    @property
    def errors(self) -> int:
        """Errors summed over all runs."""
        return sum(sample.errors for sample in self.samples)

    def ratio(self, rows: dict[str, Row]) -> float | None:
        """This row's median rate over its reference, None if either is unknown."""
        rate = self.rate
        if rate is None:
            return None
        if self.reference is not None:
            return rate / self.reference if self.reference else None
        base_row = rows.get(self.baseline or "")
        base = base_row.rate if base_row is not None else None
        if not base:
            return None
        return rate / (base * self.baseline_scale)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
