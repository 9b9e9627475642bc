import orjson

from worker import runner
from worker.store import TaskStatus


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
    import tests.e2e_tasks  # noqa: F401 - registers tests.unserializable

    outcome = runner.run_task("t", "tests.unserializable", b"{}")

    assert outcome.status is TaskStatus.FAILED
    assert orjson.loads(outcome.body)["type"] == "ResultNotSerializable"
