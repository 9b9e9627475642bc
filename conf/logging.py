"""One log format and level for every taskgate process.

``text`` (the default) is for people: one line, with ``request_id=`` and
``task_id=`` appended when the line has them. ``json`` is one JSON object per line,
for log platforms, through python-json-logger; ids are members of their own.
"""

from __future__ import annotations

import logging
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from conf.log_context import ContextFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "process", "message"]

LogFormat = Literal["text", "json"]


class TextFormatter(logging.Formatter):
    """The text format, with the record's request and task ids after the message."""

    def format(self, record: logging.LogRecord) -> str:
        """Format as :data:`FORMAT`, then append the ids that are set."""
        line = super().format(record)
        for name in ("request_id", "task_id"):
            value = getattr(record, name, None)
            if value is not None:
                line += f" {name}={value}"
        return line


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send taskgate's logs to stderr once per process; later calls only set the level."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.addFilter(ContextFilter())
        handler.setFormatter(_formatter(log_format))
        root.addHandler(handler)
    root.setLevel(level)


def _formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return TextFormatter(FORMAT)
