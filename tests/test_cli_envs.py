"""``marlkd envs``: every environment listed; one whose optional extra is missing says what it needs."""

from __future__ import annotations

import pytest

from marlkd.cli import envs as envs_command
from marlkd.cli import main

NATIVE_SIZES = {"fill-in": ["3", "32", "5"], "equal-space": ["3", "8", "5"], "grid-world": ["2", "78", "5"]}


def _listing(capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    assert main(["envs"]) == 0
    return {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}


def test_envs_lists_every_environment_and_names_missing_extras(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_describe = envs_command.describe

    def describe(env_id: str):
        if env_id.startswith("smax"):
            raise ModuleNotFoundError("No module named 'jaxmarl'", name="jaxmarl")
        if env_id.startswith("highway"):
            raise ModuleNotFoundError("No module named 'highway_env'", name="highway_env")
        return real_describe(env_id)

    monkeypatch.setattr(envs_command, "describe", describe)
    monkeypatch.setattr(envs_command, "_declared_extras", lambda: {"highway", "smax", "vault", "all"})
    monkeypatch.setattr(envs_command, "installed", lambda package: package not in ("jaxmarl", "highway_env"))
    lines = _listing(capsys)
    for env_id, sizes in NATIVE_SIZES.items():
        assert lines[env_id][1:4] == sizes
    smax = [" ".join(words) for env_id, words in lines.items() if env_id.startswith("smax")]
    assert len(smax) == 4 and all("needs extra smax" in line for line in smax)
    assert "needs extra highway" in " ".join(lines["highway"])
    # an environment of no extra names the module it misses
    missing = ModuleNotFoundError("No module named 'foo'", name="foo")
    assert (
        envs_command._missing_requirement("my-env", missing, set())
        == "unavailable: module foo is not installed"
    )


@pytest.mark.slow
def test_envs_lists_the_installed_optional_environments(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _listing(capsys)  # imports jaxmarl / highway-env where installed: seconds
    optional = {"highway", "highway-slow", "smax-2s3z", "smax-3s5z", "smax-8m-vs-9m", "smax-3s5z-vs-3s6z"}
    assert optional <= set(lines)
    for env_id, sizes in NATIVE_SIZES.items():
        assert lines[env_id][1:4] == sizes
