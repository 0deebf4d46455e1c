"""Atomic writes: the target is either old or completely new; a failure leaves it and no temporary file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from marlkd import atomic


def test_writers_replace_the_target_and_leave_no_temporary(tmp_path: Path) -> None:
    atomic.write_text(tmp_path / "a.txt", "old")
    atomic.write_text(tmp_path / "a.txt", "new")
    atomic.write_json(tmp_path / "b.json", {"z": 1, "a": torch.tensor(2.5).item()})
    atomic.torch_save({"w": torch.ones(2)}, tmp_path / "c.pt")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": 2.5, "z": 1}
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.pt"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    atomic.write_json(target, {"value": 1})
    with pytest.raises(TypeError):
        atomic.write_json(target, {"value": object()}, default=None)  # not serializable: fails mid-way
    with pytest.raises(RuntimeError, match="interrupted"), atomic.replacing(target) as tmp:
        tmp.write_text('{"value": 2')  # half-written
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_temporary_keeps_the_suffix(tmp_path: Path) -> None:
    with atomic.replacing(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"
