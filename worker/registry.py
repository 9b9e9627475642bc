"""Task registration: the ``@task`` decorator, lookup by name, and argument checks.

Task modules are imported only by the worker pool. What the web process needs to
check a request (names and parameters) travels as a plain :class:`TaskSpec`
announced by the workers through Redis, so web hosts never import task code.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from worker.errors import InvalidArgumentsError, UnknownTaskError

TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a caller may pass to a task: its keyword parameters."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    accepts_any: bool
    doc: str

    @classmethod
    def from_function(cls, function: Callable[..., Any]) -> TaskSpec:
        """Read the spec off a function's signature."""
        required: list[str] = []
        optional: list[str] = []
        accepts_any = False
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is parameter.VAR_KEYWORD:
                accepts_any = True
            elif parameter.kind is parameter.VAR_POSITIONAL:
                continue
            elif parameter.kind is parameter.POSITIONAL_ONLY:
                # A JSON object can only fill keyword parameters.
                if parameter.default is parameter.empty:
                    raise TypeError(
                        f"{function.__qualname__}: tasks take keyword arguments"
                    )
            elif parameter.default is parameter.empty:
                required.append(parameter.name)
            else:
                optional.append(parameter.name)
        doc = inspect.getdoc(function) or ""
        return cls(tuple(required), tuple(optional), accepts_any, doc)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Rebuild a spec from its announced JSON form."""
        return cls(
            tuple(data.get("required", ())),
            tuple(data.get("optional", ())),
            bool(data.get("accepts_any", False)),
            str(data.get("doc", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form workers announce."""
        return {
            "required": list(self.required),
            "optional": list(self.optional),
            "accepts_any": self.accepts_any,
            "doc": self.doc,
        }

    def check(self, arguments: Mapping[str, Any]) -> None:
        """Raise InvalidArgumentsError naming missing or unexpected arguments."""
        missing = [name for name in self.required if name not in arguments]
        known = set(self.required) | set(self.optional)
        unexpected = [] if self.accepts_any else sorted(set(arguments) - known)
        problems = []
        if missing:
            problems.append("missing: " + ", ".join(missing))
        if unexpected:
            problems.append("unexpected: " + ", ".join(unexpected))
        if problems:
            raise InvalidArgumentsError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A registered task: its name, function and spec."""

    name: str
    function: Callable[..., Any]
    spec: TaskSpec


_tasks: dict[str, TaskDefinition] = {}


def task(name: str) -> Callable[[F], F]:
    """Register the decorated function as the task ``name``."""
    if not TASK_NAME.match(name):
        raise ValueError(f"invalid task name {name!r}: must match {TASK_NAME.pattern}")

    def register(function: F) -> F:
        existing = _tasks.get(name)
        if existing is not None and existing.function is not function:
            raise ValueError(
                f"task {name!r} is already registered by {existing.function!r}"
            )
        _tasks[name] = TaskDefinition(name, function, TaskSpec.from_function(function))
        return function

    return register


def get(name: str) -> TaskDefinition:
    """The task registered under ``name``; UnknownTaskError if there is none."""
    try:
        return _tasks[name]
    except KeyError:
        raise UnknownTaskError(f"no task named {name!r} is registered") from None


def registered() -> dict[str, TaskDefinition]:
    """A copy of every registered task, by name."""
    return dict(_tasks)


def load_modules(module_names: Iterable[str]) -> dict[str, TaskDefinition]:
    """Import task modules (which register their tasks) and return the registry."""
    for module_name in module_names:
        importlib.import_module(module_name)
    return registered()
