"""``marlkd envs``: every environment listed; one whose optional extra is missing says what it needs."""

from __future__ import annotations

import pytest

from marlkd.cli import envs as envs_command
from marlkd.cli import main


def test_envs_lists_native_environments_with_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["fill-in"][1:4] == ["3", "32", "5"]
    assert lines["equal-space"][1:4] == ["3", "8", "5"]
    assert lines["grid-world"][1:4] == ["2", "78", "5"]
    assert {"smax-2s3z", "highway"} <= set(lines)


def test_envs_reports_a_missing_extra_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_describe = envs_command.describe

    def describe(env_id: str):
        if env_id.startswith("smax"):
            raise ModuleNotFoundError("No module named 'jaxmarl'", name="jaxmarl")
        return real_describe(env_id)

    monkeypatch.setattr(envs_command, "describe", describe)
    assert main(["envs"]) == 0
    smax_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("smax")]
    assert len(smax_lines) == 4 and all("needs extra smax" in line for line in smax_lines)
