"""The chaos check, in its small form: kills while submitting, then nothing stuck or lost."""

import re
import subprocess

import pytest

from tests.helpers import ROOT, python_args

pytestmark = pytest.mark.slow


def test_chaos_loses_nothing_and_leaves_nothing_stuck():
    result = subprocess.run(
        python_args(
            "-m", "tools.chaos", "--tasks", "250", "--duration-s", "10", "--seed", "7"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    print(result.stdout)
    line = result.stdout.strip().splitlines()[-1]
    counts = {
        name: int(number) for name, number in re.findall(r"([a-z-]+) (\d+)", line)
    }
    assert re.fullmatch(
        r"submitted \d+, succeeded \d+, failed \d+, cancelled \d+, stuck 0, lost 0, "
        r"ran-twice \d+",
        line,
    ), line
    assert line.startswith("submitted 250,"), line
    assert counts["succeeded"] + counts["failed"] + counts["cancelled"] == 250
    assert result.returncode == 0
    kills = re.search(r"kills: \{(.*)\}", result.stdout)
    assert kills and kills.group(1).count(":") >= 3, "the run must kill several kinds"
