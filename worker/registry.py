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
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pydantic

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
    # 0 means "the pool's default" (TASKGATE_MAX_ATTEMPTS, TASKGATE_TIME_LIMIT_S);
    # a pool announces its specs with the defaults filled in.
    max_attempts: int = 0
    time_limit_s: float = 0.0

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
            int(data.get("max_attempts", 0)),
            float(data.get("time_limit_s", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form workers announce."""
        return {
            "required": list(self.required),
            "optional": list(self.optional),
            "accepts_any": self.accepts_any,
            "doc": self.doc,
            "max_attempts": self.max_attempts,
            "time_limit_s": self.time_limit_s,
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
    # The function behind pydantic's argument validation: JSON values are checked
    # against the annotations (and converted where lossless) before the body runs.
    validated: Callable[..., Any]

    def run(self, arguments: dict[str, Any]) -> Any:
        """Call the task; InvalidArgumentsError if the values do not fit its annotations."""
        self.spec.check(arguments)
        try:
            return self.validated(**arguments)
        except pydantic.ValidationError as exc:
            if exc.title != self.function.__name__:
                raise  # raised by the task's own code, not by the argument check
            raise InvalidArgumentsError(_describe(exc)) from None


def _describe(exc: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors()
    )


_tasks: dict[str, TaskDefinition] = {}


def task(
    name: str, *, max_attempts: int = 0, time_limit_s: float = 0.0
) -> Callable[[F], F]:
    """Register the decorated function as the task ``name``.

    ``max_attempts`` bounds how often the task starts when the worker running it is
    lost; ``time_limit_s`` is the run time after which its process is killed. Zero
    takes the pool's defaults.
    """
    if not TASK_NAME.match(name):
        raise ValueError(f"invalid task name {name!r}: must match {TASK_NAME.pattern}")
    if max_attempts < 0 or time_limit_s < 0:
        raise ValueError("max_attempts and time_limit_s must not be negative")

    def register(function: F) -> F:
        existing = _tasks.get(name)
        if existing is not None and existing.function is not function:
            raise ValueError(
                f"task {name!r} is already registered by {existing.function!r}"
            )
        spec = replace(
            TaskSpec.from_function(function),
            max_attempts=max_attempts,
            time_limit_s=time_limit_s,
        )
        _tasks[name] = TaskDefinition(
            name, function, spec, pydantic.validate_call(function)
        )
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
