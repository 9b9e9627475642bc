import pytest

from worker import registry
from worker.errors import InvalidArgumentsError, UnknownTaskError
from worker.registry import TaskSpec


def test_spec_reads_required_optional_and_doc():
    def resize(path: str, width: int, height: int = 0) -> None:
        """Resize an image."""

    spec = TaskSpec.from_function(resize)

    assert spec == TaskSpec(("path", "width"), ("height",), False, "Resize an image.")


def test_spec_of_var_keyword_accepts_anything():
    def anything(**kwargs):
        return kwargs

    spec = TaskSpec.from_function(anything)

    assert spec.accepts_any
    spec.check({"whatever": 1})


def test_spec_rejects_required_positional_only_parameters():
    def positional(value, /):
        return value

    with pytest.raises(TypeError, match="keyword arguments"):
        TaskSpec.from_function(positional)


def test_spec_check_names_missing_and_unexpected_arguments():
    spec = TaskSpec(("a", "b"), ("c",), False, "")

    with pytest.raises(InvalidArgumentsError) as caught:
        spec.check({"a": 1, "z": 2, "y": 3})

    assert str(caught.value) == "missing: b; unexpected: y, z"


def test_spec_survives_its_json_form():
    spec = TaskSpec(("a",), ("b", "c"), True, "doc")

    assert TaskSpec.from_dict(spec.to_dict()) == spec


def test_task_decorator_registers_and_get_finds_it():
    @registry.task("tests.registry.double")
    def double(x: int) -> int:
        return 2 * x

    definition = registry.get("tests.registry.double")

    assert definition.function(x=4) == 8
    assert definition.spec.required == ("x",)


def test_task_decorator_refuses_bad_names_and_duplicates():
    with pytest.raises(ValueError, match="invalid task name"):
        registry.task("has space")

    @registry.task("tests.registry.once")
    def first() -> None: ...

    with pytest.raises(ValueError, match="already registered"):

        @registry.task("tests.registry.once")
        def second() -> None: ...


def test_get_unknown_task_raises():
    with pytest.raises(UnknownTaskError):
        registry.get("tests.registry.never-registered")


def test_load_modules_registers_the_example_tasks():
    tasks = registry.load_modules(["worker.tasks"])

    assert {"echo", "sleep", "hash", "countdown", "fail", "process"} <= set(tasks)
