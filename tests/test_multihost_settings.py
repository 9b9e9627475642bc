"""Settings of a multi-host setup: broker lists, bind addresses, Sentinel."""

import subprocess
import sys

import pytest

from conf.settings import Settings
from tests.helpers import ROOT
from worker.broker import bind_address


def test_broker_lists_split_on_commas():
    settings = Settings(
        broker_frontend="tcp://10.0.0.11:5555, tcp://10.0.0.12:5555",
        broker_backend="tcp://10.0.0.11:5556",
    )

    assert settings.broker_frontends == ["tcp://10.0.0.11:5555", "tcp://10.0.0.12:5555"]
    assert settings.broker_backends == ["tcp://10.0.0.11:5556"]


def test_a_broker_binds_its_own_address_only_when_it_is_told_which():
    assert bind_address("", ["tcp://10.0.0.11:5555"]) == "tcp://10.0.0.11:5555"
    assert bind_address("tcp://*:5555", ["tcp://a:1", "tcp://b:1"]) == "tcp://*:5555"
    with pytest.raises(ValueError, match="TASKGATE_BROKER_BIND_FRONTEND"):
        bind_address("", ["tcp://a:1", "tcp://b:1"])


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKGATE_BROKER_FRONTEND", "tcp://a:1,,tcp://b:1"),
        ("TASKGATE_BROKER_FRONTEND", "http://a:1"),
        ("TASKGATE_BROKER_BIND_BACKEND", "tcp://a:1,tcp://b:1"),
        ("TASKGATE_BROKER_LEASE_S", "0"),
        ("TASKGATE_REDIS_SENTINELS", "10.0.0.2"),
    ],
)
def test_a_bad_multihost_setting_stops_the_process_naming_it(variable, value):
    result = subprocess.run(
        [sys.executable, "-c", "from conf.settings import load; load()"],
        cwd=ROOT,
        env={variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
    assert variable in result.stderr


def test_a_broker_with_a_wrong_key_file_stops_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "worker.broker"],
        cwd=ROOT,
        env={
            "TASKGATE_CURVE_BROKER_KEY": str(tmp_path / "missing.key_secret"),
            "REDIS_URL": "redis://127.0.0.1:1/0",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert "TASKGATE_CURVE_BROKER_KEY: cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
