"""The dataset file format: round trip, every rejection of the reader, atomic writes, the CLI."""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from marlkd.cli import main
from marlkd.data.format import (
    FORMAT_VERSION,
    DatasetMetadata,
    OfflineDataset,
    compute_checksum,
    load_dataset,
    write_dataset,
)
from marlkd.errors import DatasetError

Arrays = tuple[dict[str, np.ndarray], dict[str, Any]]


def _rewrite(path: Path, name: str, value: np.ndarray) -> None:
    """Replace the array ``name`` in an existing file, bypassing the writer's checks."""
    with h5py.File(path, "r+") as file:
        del file[name]
        file.create_dataset(name, data=value)


def _reject(path: Path, *fragments: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    for fragment in fragments:
        assert fragment in message, message


def test_round_trip_keeps_every_field(tmp_path: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, metadata = tiny_dataset_arrays
    path = write_dataset(tmp_path / "sub" / "data.h5", arrays, metadata)
    dataset = load_dataset(path)
    assert isinstance(dataset, OfflineDataset)
    assert dataset.path == path
    for name, array in arrays.items():
        loaded = getattr(dataset, name)
        assert loaded.dtype == array.dtype and np.array_equal(loaded, array), name
    meta = dataset.metadata
    assert isinstance(meta, DatasetMetadata)
    assert meta.format_version == FORMAT_VERSION
    assert (meta.env_id, meta.env_kwargs, meta.quality, meta.seed) == ("test-tiny", {"size": 3}, "random", 0)
    assert meta.behavior_policy == metadata["behavior_policy"]
    assert (meta.n_agents, meta.obs_dim, meta.n_actions, meta.state_dim, meta.n_episodes) == (2, 3, 4, 5, 6)
    per_episode = arrays["rewards"].sum(axis=1, dtype=np.float64).mean(axis=1)
    assert meta.mean_return == pytest.approx(per_episode.mean())
    assert meta.min_return == pytest.approx(per_episode.min())
    assert meta.max_return == pytest.approx(per_episode.max())
    assert math.isnan(meta.normalized_score)
    assert meta.checksum == compute_checksum(arrays)
    assert (dataset.n_episodes, dataset.max_steps, dataset.n_agents) == (6, 6, 2)
    assert (dataset.obs_dim, dataset.n_actions, dataset.state_dim, len(dataset)) == (3, 4, 5, 6)


def test_optional_arrays_may_be_absent(tmp_path: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, metadata = tiny_dataset_arrays
    del arrays["state"], arrays["avail_actions"]
    dataset = load_dataset(write_dataset(tmp_path / "d.h5", arrays, {**metadata, "seed": None}))
    assert dataset.state is None and dataset.avail_actions is None
    assert dataset.state_dim == 0 and dataset.n_actions == 4
    assert dataset.metadata.seed is None


def test_writer_converts_lossless_dtypes(tmp_path: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, metadata = tiny_dataset_arrays
    arrays["actions"] = arrays["actions"].astype(np.int32)
    arrays["mask"] = arrays["mask"].astype(np.uint8)
    arrays["obs"] = arrays["obs"].astype(np.float64)
    dataset = load_dataset(write_dataset(tmp_path / "d.h5", arrays, metadata, compression="lzf"))
    assert dataset.actions.dtype == np.int64 and dataset.mask.dtype == np.bool_
    assert dataset.obs.dtype == np.float32


def test_same_data_gives_identical_files(tmp_path: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, metadata = tiny_dataset_arrays
    first = write_dataset(tmp_path / "a.h5", arrays, metadata).read_bytes()
    assert first == write_dataset(tmp_path / "b.h5", arrays, metadata).read_bytes()


def test_episode_api(tiny_dataset: Path) -> None:
    dataset = load_dataset(tiny_dataset)
    returns = dataset.episode_returns()
    assert returns.shape == (6, 2)
    np.testing.assert_allclose(returns, dataset.rewards.sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(dataset.episode_lengths(), np.arange(1, 7))

    episodes = list(dataset.iterate_episodes())
    assert [episode.id for episode in episodes] == list(range(6))
    third = episodes[2]
    assert third.length == 3 and third.obs.shape == (3, 2, 3) and third.actions.shape == (3, 2)
    assert third.state.shape == (3, 5) and third.avail_actions.shape == (3, 2, 4)
    np.testing.assert_allclose(third.returns, returns[2])

    sampled = dataset.sample_episodes(4, np.random.default_rng(1))
    assert len({episode.id for episode in sampled}) == 4
    assert [e.id for e in sampled] == [e.id for e in dataset.sample_episodes(4, np.random.default_rng(1))]
    with pytest.raises(ValueError):
        dataset.sample_episodes(7)

    long = dataset.filter_episodes(lambda episode: episode.length >= 4)
    np.testing.assert_array_equal(long.episode_lengths(), [4, 5, 6])
    assert long.metadata.n_episodes == 3 and long.path is None
    assert long.metadata.mean_return == pytest.approx(returns[3:].mean(axis=1).mean())
    assert long.metadata.checksum == compute_checksum(long.arrays())

    picked = dataset.subset([5, 0])
    np.testing.assert_array_equal(picked.obs, dataset.obs[[5, 0]])
    np.testing.assert_array_equal(dataset.subset(np.arange(6) < 2).actions, dataset.actions[:2])
    with pytest.raises(ValueError):
        dataset.subset([])
    with pytest.raises(IndexError):
        dataset.subset([6])
    assert dataset.episode(-1).id == 5 and dataset.episode(-1).length == 6
    with pytest.raises(ValueError, match="empty"):
        dataset.filter_episodes(lambda episode: False)


def test_subset_can_be_written_back(tmp_path: Path, tiny_dataset: Path) -> None:
    subset = load_dataset(tiny_dataset).subset([1, 2])
    loaded = load_dataset(write_dataset(tmp_path / "subset.h5", subset.arrays(), subset.metadata.to_dict()))
    for key in ("n_episodes", "mean_return", "min_return", "max_return", "checksum", "behavior_policy"):
        assert getattr(loaded.metadata, key) == getattr(subset.metadata, key), key


def test_loading_a_thousand_episodes_is_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    episodes, steps, agents, obs_dim = 1000, 40, 3, 40
    arrays = {
        "obs": (rng.random((episodes, steps, agents, obs_dim)) < 0.1).astype(np.float32),  # grid-like
        "actions": rng.integers(0, 5, size=(episodes, steps, agents)),
        "rewards": rng.normal(size=(episodes, steps, agents)).astype(np.float32),
        "mask": np.ones((episodes, steps), dtype=bool),
        "terminals": np.zeros((episodes, steps, agents), dtype=bool),
        "truncations": np.zeros((episodes, steps, agents), dtype=bool),
    }
    path = write_dataset(tmp_path / "big.h5", arrays, {"env_id": "x", "n_actions": 5, "seed": 0})
    start = time.perf_counter()
    load_dataset(path)
    assert time.perf_counter() - start < 2.0


# --- rejections: each problem raises DatasetError naming the file and the field -------------------------


def test_rejects_missing_file(tmp_path: Path) -> None:
    _reject(tmp_path / "absent.h5", "file not found")


def test_rejects_file_that_is_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("just text\n")
    _reject(path, "not an HDF5 file")


def test_rejects_truncated_file(tmp_path: Path, tiny_dataset: Path) -> None:
    data = tiny_dataset.read_bytes()
    tiny_dataset.write_bytes(data[: len(data) // 2])
    _reject(tiny_dataset, "truncated or corrupt")


def test_rejects_missing_field(tiny_dataset: Path) -> None:
    with h5py.File(tiny_dataset, "r+") as file:
        del file["terminals"]
    _reject(tiny_dataset, "field 'terminals'", "missing")


def test_rejects_missing_attribute(tiny_dataset: Path) -> None:
    with h5py.File(tiny_dataset, "r+") as file:
        del file.attrs["quality"]
    _reject(tiny_dataset, "attribute 'quality'", "missing")


def test_rejects_wrong_shape(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    _rewrite(tiny_dataset, "rewards", arrays["rewards"][:, :5])
    _reject(tiny_dataset, "field 'rewards'", "shape (6, 5, 2)")


def test_rejects_wrong_dtype(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    _rewrite(tiny_dataset, "actions", arrays["actions"].astype(np.int32))
    _reject(tiny_dataset, "field 'actions'", "dtype int32")


def test_rejects_nan(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    rewards = arrays["rewards"].copy()
    rewards[3, 1, 0] = np.nan
    _rewrite(tiny_dataset, "rewards", rewards)
    _reject(tiny_dataset, "field 'rewards': contains NaN at episode 3 step 1 agent 0")


def test_rejects_bad_checksum(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    obs = arrays["obs"].copy()
    obs[0, 0, 0, 0] += 1.0  # still a valid file, but not the data that was written
    _rewrite(tiny_dataset, "obs", obs)
    _reject(tiny_dataset, "'checksum'", "do not match")


def test_rejects_wrong_return_statistics(tiny_dataset: Path) -> None:
    with h5py.File(tiny_dataset, "r+") as file:
        file.attrs["mean_return"] = 123.0
    _reject(tiny_dataset, "attribute 'mean_return'")


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0])
def test_rejects_other_format_version(tiny_dataset: Path, version: int) -> None:
    with h5py.File(tiny_dataset, "r+") as file:
        file.attrs["format_version"] = version
    _reject(tiny_dataset, "attribute 'format_version'", f"version {version}")


@pytest.mark.parametrize(
    ("key", "value"), [("n_agents", 3), ("obs_dim", 4), ("n_episodes", 7), ("n_actions", 5)]
)
def test_rejects_metadata_that_contradicts_the_arrays(tiny_dataset: Path, key: str, value: int) -> None:
    with h5py.File(tiny_dataset, "r+") as file:
        file.attrs[key] = value
    _reject(tiny_dataset, f"attribute {key!r}", f"says {value}")


def test_rejects_mask_that_is_not_a_prefix(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    mask = arrays["mask"].copy()
    mask[4, 2] = False  # a hole inside episode 4
    _rewrite(tiny_dataset, "mask", mask)
    _reject(tiny_dataset, "field 'mask': episode 4", "not a prefix")


def test_rejects_nonzero_padding(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    obs = arrays["obs"].copy()
    obs[1, 4, 1, 2] = 0.5  # episode 1 has 2 valid steps
    _rewrite(tiny_dataset, "obs", obs)
    _reject(tiny_dataset, "field 'obs': padding is not zero at episode 1 step 4")


def test_rejects_action_out_of_range(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    actions = arrays["actions"].copy()
    actions[2, 0, 1] = 4
    _rewrite(tiny_dataset, "actions", actions)
    _reject(tiny_dataset, "field 'actions': action 4 at episode 2 step 0 agent 1 is outside [0, 4)")


def test_rejects_unavailable_action(tiny_dataset: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, _ = tiny_dataset_arrays
    avail = arrays["avail_actions"].copy()
    avail[5, 3, 0, arrays["actions"][5, 3, 0]] = False
    _rewrite(tiny_dataset, "avail_actions", avail)
    _reject(tiny_dataset, "field 'avail_actions'", "episode 5 step 3 agent 0", "unavailable")


def test_rejects_invalid_json_attribute(tiny_dataset: Path) -> None:
    with h5py.File(tiny_dataset, "r+") as file:
        file.attrs["env_kwargs"] = "{not json"
    _reject(tiny_dataset, "attribute 'env_kwargs'", "JSON")


# --- the writer ----------------------------------------------------------------------------------------


def test_writer_rejects_invalid_arrays(tmp_path: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, metadata = tiny_dataset_arrays
    arrays["obs"][2, 0, 0, 0] = np.inf
    target = tmp_path / "bad.h5"
    with pytest.raises(DatasetError, match=r"bad.h5: field 'obs': contains an infinite value at episode 2"):
        write_dataset(target, arrays, metadata)
    assert not target.exists()


def test_writer_rejects_bad_metadata(tmp_path: Path, tiny_dataset_arrays: Arrays) -> None:
    arrays, metadata = tiny_dataset_arrays
    with pytest.raises(DatasetError, match="unknown metadata attribute"):
        write_dataset(tmp_path / "d.h5", arrays, {**metadata, "qualty": "good"})
    with pytest.raises(DatasetError, match="attribute 'n_agents': given 3"):
        write_dataset(tmp_path / "d.h5", arrays, {**metadata, "n_agents": 3})
    with pytest.raises(DatasetError, match="attribute 'env_id'"):
        write_dataset(tmp_path / "d.h5", arrays, {k: v for k, v in metadata.items() if k != "env_id"})
    del arrays["avail_actions"]
    with pytest.raises(DatasetError, match="attribute 'n_actions': required"):
        write_dataset(tmp_path / "d.h5", arrays, {k: v for k, v in metadata.items() if k != "n_actions"})


def test_interrupted_write_leaves_previous_file_intact(
    tmp_path: Path, tiny_dataset_arrays: Arrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays, metadata = tiny_dataset_arrays
    target = write_dataset(tmp_path / "data.h5", arrays, metadata)
    before = target.read_bytes()
    original = h5py.Group.create_dataset
    calls = []

    def crash_on_third_array(self: h5py.Group, name: str, *args: Any, **kwargs: Any) -> h5py.Dataset:
        calls.append(name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-write
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", crash_on_third_array)
    changed = {**arrays, "rewards": arrays["rewards"] * 2}
    with pytest.raises(KeyboardInterrupt):
        write_dataset(target, changed, metadata)
    fresh = tmp_path / "fresh.h5"
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        write_dataset(fresh, changed, metadata)
    monkeypatch.undo()

    assert target.read_bytes() == before
    load_dataset(target)
    assert not fresh.exists()
    assert sorted(os.listdir(tmp_path)) == ["data.h5"]  # no temporary files left behind


def test_written_file_has_the_usual_permissions(tiny_dataset: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(tiny_dataset.stat().st_mode) == 0o666 & ~umask


# --- the CLI -------------------------------------------------------------------------------------------


def test_cli_info_prints_metadata_and_returns(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    mean_return = f"{load_dataset(tiny_dataset).metadata.mean_return:.4g}"
    for fragment in ("test-tiny", "random", "episodes", "agent_0", "agent_1", mean_return):
        assert fragment in out, out


def test_cli_info_json(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", "--json", str(tiny_dataset)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["env_id"] == "test-tiny" and len(info["agent_mean_returns"]) == 2


def test_cli_validate(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "validate", "--skip-env", str(tiny_dataset)]) == 0
    assert "ok" in capsys.readouterr().out
    # its environment (test-tiny) is not registered: only --skip-env lets it pass
    assert main(["dataset", "validate", str(tiny_dataset)]) == 2
    assert "unknown environment 'test-tiny'" in capsys.readouterr().err
    broken = tmp_path / "broken.h5"
    broken.write_text("nope")
    assert main(["dataset", "validate", "--skip-env", str(tiny_dataset), str(broken)]) == 2
    assert f"{broken}: not an HDF5 file" in capsys.readouterr().err


def test_cli_info_reports_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "info", str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5: file not found" in capsys.readouterr().err
