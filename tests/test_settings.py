import subprocess
import sys

import pytest

from conf.settings import Settings, load
from tests.helpers import ROOT


def test_settings_defaults_keep_waits_under_the_router_cut():
    settings = Settings()

    assert settings.wait_default_s == 20
    assert settings.wait_max_s < 30
    assert settings.task_module_names == ["worker.tasks"]


def test_settings_read_platform_and_prefixed_variables(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:1/2")
    monkeypatch.setenv("TASKGATE_WAIT_DEFAULT_S", "3.5")
    monkeypatch.setenv("TASKGATE_TASK_MODULES", "a.tasks, b.tasks ,")

    settings = load()

    assert settings.port == 9123
    assert settings.redis_url == "redis://example.invalid:1/2"
    assert settings.wait_default_s == 3.5
    assert settings.task_module_names == ["a.tasks", "b.tasks"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("REDIS_URL", "http://nope"),
        ("TASKGATE_HEARTBEAT_LIVENESS", "0"),
        ("TASKGATE_LOG_LEVEL", "LOUD"),
        ("TASKGATE_WAIT_DEFAULT_S", "99"),
        ("TASKGATE_API_KEYS", "too-short"),
        ("TASKGATE_API_KEYS", "a-long-enough-key-1, key with spaces inside!"),
        ("TASKGATE_IDEMPOTENCY_TTL_S", "999999999"),
        ("TASKGATE_MAX_TASK_NAME_CHARS", "65"),
        ("TASKGATE_MAX_JSON_DEPTH", "0"),
    ],
)
def test_a_bad_setting_stops_the_process_with_one_line_naming_it(variable, value):
    code = "from conf.settings import load; load()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"taskgate: invalid setting {variable}:")


def test_bad_api_keys_are_explained_not_shown_as_a_pattern():
    code = "from conf.settings import load; load()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"TASKGATE_API_KEYS": "short"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.stderr.strip() == (
        "taskgate: invalid setting TASKGATE_API_KEYS: expected keys of 16-256 "
        "visible ASCII characters each (no spaces or commas), separated by commas"
    )


def test_api_keys_are_a_comma_separated_list():
    settings = Settings(api_keys=" first-key-0123456789 ,second-key-0123456789,")

    assert settings.api_key_list == ["first-key-0123456789", "second-key-0123456789"]
    assert Settings().api_key_list == []
