"""A plain-text progress bar drawn from a task's ``progress`` field."""

from __future__ import annotations

from typing import Any, TextIO

BAR_CHARS = 30


class ProgressBar:
    """Draws one line per change of a task's status or progress on ``stream``.

    On a terminal the line is redrawn in place (carriage return); into a file or
    pipe each change is a line of its own, so logs stay readable.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._in_place = stream.isatty()
        self._last = ""

    def update(self, task: dict[str, Any]) -> None:
        """Draw ``task``'s state if it changed since the last call."""
        line = describe(task)
        if line == self._last:
            return
        if self._in_place:
            # Pad over the end of a longer previous line.
            self._stream.write("\r" + line.ljust(len(self._last)))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._last = line

    def close(self) -> None:
        """End the redrawn line so what follows starts on a line of its own."""
        if self._in_place and self._last:
            self._stream.write("\n")
            self._stream.flush()


def describe(task: dict[str, Any]) -> str:
    """One line: status, and a bar with counts when the task reports progress."""
    status = str(task.get("status", "?"))
    progress = task.get("progress")
    if not isinstance(progress, dict):
        return status
    current = progress.get("current") or 0
    total = progress.get("total")
    message = progress.get("message") or ""
    if isinstance(total, int | float) and total > 0:
        filled = round(BAR_CHARS * min(1.0, max(0.0, current / total)))
        bar = "[" + "#" * filled + "." * (BAR_CHARS - filled) + "]"
        line = f"{status} {bar} {current:g}/{total:g}"
    else:
        # No total: a count without a bar.
        line = f"{status} {current:g}"
    return f"{line} {message}".rstrip()
