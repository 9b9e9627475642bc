import orjson
import pytest

from worker import registry, runner
from worker.store import TaskStatus


@pytest.fixture(autouse=True)
def example_tasks():
    registry.load_modules(["worker.tasks", "tests.e2e_tasks"])


def test_run_task_returns_the_result_as_json():
    outcome = runner.run_task("t", "echo", b'{"x": [1, 2]}')

    assert outcome.status is TaskStatus.SUCCEEDED
    assert orjson.loads(outcome.body) == {"x": [1, 2]}


def test_run_task_turns_an_exception_into_a_failure_with_traceback():
    outcome = runner.run_task("t", "fail", b'{"message": "no luck"}')

    assert outcome.status is TaskStatus.FAILED
    assert orjson.loads(outcome.body) == {"type": "RuntimeError", "message": "no luck"}
    assert "Traceback" in outcome.traceback
    assert "raise RuntimeError(message)" in outcome.traceback


def test_run_task_fails_wrong_arguments_without_calling_the_task():
    outcome = runner.run_task("t", "sleep", b'{"secs": 1}')

    assert outcome.status is TaskStatus.FAILED
    assert orjson.loads(outcome.body)["type"] == "InvalidArgumentsError"


def test_run_task_fails_an_unknown_name():
    outcome = runner.run_task("t", "no-such-task", b"{}")

    assert orjson.loads(outcome.body)["type"] == "UnknownTaskError"


def test_run_task_fails_a_result_json_cannot_hold():
    outcome = runner.run_task("t", "tests.unserializable", b"{}")

    assert outcome.status is TaskStatus.FAILED
    assert orjson.loads(outcome.body)["type"] == "ResultNotSerializable"


def test_run_task_refuses_values_that_do_not_fit_the_annotations():
    outcome = runner.run_task("t", "sleep", b'{"seconds": "soon"}')

    assert outcome.status is TaskStatus.FAILED
    error = orjson.loads(outcome.body)
    assert error["type"] == "InvalidArgumentsError"
    assert error["message"].startswith("seconds: Input should be a valid number")


def test_run_task_converts_lossless_values_like_numeric_strings():
    outcome = runner.run_task("t", "hash", b'{"megabytes": "2"}')

    assert outcome.status is TaskStatus.SUCCEEDED
    assert orjson.loads(outcome.body)["megabytes"] == 2


def test_a_validation_error_raised_by_task_code_stays_a_task_failure():
    import pydantic

    @registry.task("tests.runner.inner-validation")
    def uses_pydantic() -> None:
        pydantic.TypeAdapter(int).validate_python("not a number")

    outcome = runner.run_task("t", "tests.runner.inner-validation", b"{}")

    assert orjson.loads(outcome.body)["type"] == "ValidationError"
