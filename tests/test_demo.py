"""The demo (``make demo``) end to end at a tiny size: expert, dataset, every method, table and curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from marlkd.demo import DemoConfig, run_demo
from marlkd.errors import ConfigError


@pytest.mark.slow
def test_tiny_demo_writes_a_table_row_per_method_and_resumes(tmp_path: Path) -> None:
    config = DemoConfig(
        out=str(tmp_path / "demo"),
        episodes=16,
        expert_steps=2048,
        steps=4,
        methods=("bc", "ours"),
        eval_episodes=2,
    )
    table = run_demo(config, progress=False)
    out = Path(config.out)
    assert (out / "results.md").read_text() == table
    assert (out / "curves.png").stat().st_size > 0
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| bc", "| ours", "| ours: its centralized teacher"]
    assert "| 8 |" in rows[1]  # ours: 4 teacher updates, then 4 student updates
    expert_dirs = list((out / "data" / "experts").iterdir())
    checkpoint = out / "runs" / "ours" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    assert run_demo(config, progress=False) == table  # given again: everything reused, same table
    assert checkpoint.stat().st_mtime_ns == before
    assert list((out / "data" / "experts").iterdir()) == expert_dirs


def test_demo_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="demo.methods"):
        DemoConfig(methods=("bc", "nope"))
    with pytest.raises(ConfigError, match="demo.steps"):
        DemoConfig(steps=0)
