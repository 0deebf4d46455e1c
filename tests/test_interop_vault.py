"""OG-MARL Vaults written by flashbax itself: import, train with evaluation off, export back bit for bit;
bad Vaults rejected naming the path and field; the D4RL-style importer."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("tensorstore", reason="Vaults need the vault extra (pip install 'marlkd[vault]')")

from marlkd.algos.idt import Config as IDTConfig  # noqa: E402
from marlkd.cli import main  # noqa: E402
from marlkd.config import EvalConfig, TrainConfig  # noqa: E402
from marlkd.data.flat import import_d4rl  # noqa: E402
from marlkd.data.format import load_dataset, write_dataset  # noqa: E402
from marlkd.data.vault import VaultError, export_vault, import_vault, read_vault  # noqa: E402
from marlkd.errors import DatasetError  # noqa: E402
from marlkd.run_config import RunConfig  # noqa: E402

N, O, A, S = 3, 4, 5, 6
SMALL_DT = {"context": 3, "width": 16, "layers": 1, "heads": 2, "dropout": 0.0, "head_hidden": 16}
LENGTHS = (7, 3, 11, 5)  # the last episode is cut off: the recording stopped in its middle


def _stream(seed: int = 0) -> dict[str, np.ndarray]:
    """A flat OG-MARL-style recording: episodes one after another, OG-MARL's dtypes."""
    rng = np.random.default_rng(seed)
    total = sum(LENGTHS)
    legals = (rng.random((total, N, A)) < 0.6).astype(np.float32)
    legals[..., 0] = 1.0
    actions = np.where(legals > 0, rng.random(legals.shape), -1.0).argmax(-1).astype(np.int32)
    terminals = np.zeros((total, N), np.float32)
    truncations = np.zeros((total, N), np.float32)
    ends = np.cumsum(LENGTHS) - 1
    terminals[ends[0]] = 1.0  # every agent terminal
    truncations[ends[1]] = 1.0  # every agent truncated
    terminals[ends[2], :2], truncations[ends[2], 2] = 1.0, 1.0  # mixed, still all agents done
    terminals[2, 0] = 1.0  # one agent done early: not an episode end
    return {
        "observations": rng.normal(size=(total, N, O)).astype(np.float32),
        "actions": actions,
        "rewards": rng.normal(size=(total, N)).astype(np.float32),
        "terminals": terminals,
        "truncations": truncations,
        "infos": {"legals": legals, "state": rng.normal(size=(total, S)).astype(np.float32)},
    }


@pytest.fixture(scope="module")
def flashbax_vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A Vault written by flashbax (buffer of 64 steps, two writes), as OG-MARL records one."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    fbx = pytest.importorskip("flashbax", reason="flashbax writes the reference Vaults (the test extra)")
    import jax
    import jax.numpy as jnp
    from flashbax.vault import Vault

    stream = _stream()
    root = tmp_path_factory.mktemp("vaults")
    first = jax.tree.map(lambda x: jnp.asarray(x[0]), stream)
    buffer = fbx.make_trajectory_buffer(
        add_batch_size=1,
        sample_batch_size=1,
        sample_sequence_length=1,
        period=1,
        min_length_time_axis=1,
        max_length_time_axis=64,
    )
    state = buffer.init(first)
    vault = Vault(
        vault_name="og_marl/smac_v1/3m.vlt",
        experience_structure=state.experience,
        rel_dir=str(root),
        vault_uid="Good",
        metadata={"recorded_by": "a test"},
    )
    split = 12
    for lo, hi in ((0, split), (split, sum(LENGTHS))):
        state = buffer.add(state, jax.tree.map(lambda x, lo=lo, hi=hi: jnp.asarray(x[None, lo:hi]), stream))
        vault.write(state)
    return root / "og_marl" / "smac_v1" / "3m.vlt", stream


def test_import_splits_pads_and_records_the_source(flashbax_vault, tmp_path):
    vault_dir, stream = flashbax_vault
    path = import_vault(vault_dir, "Good", tmp_path / "3m.h5")
    data = load_dataset(path)
    assert data.n_episodes == len(LENGTHS) and data.max_steps == max(LENGTHS)
    assert data.episode_lengths().tolist() == list(LENGTHS)
    start = 0
    for e, length in enumerate(LENGTHS):
        episode, rows = data.episode(e), slice(start, start + length)
        np.testing.assert_array_equal(episode.obs, stream["observations"][rows])
        np.testing.assert_array_equal(episode.actions, stream["actions"][rows])
        np.testing.assert_array_equal(episode.rewards, stream["rewards"][rows])
        np.testing.assert_array_equal(episode.terminals, stream["terminals"][rows] > 0)
        np.testing.assert_array_equal(episode.avail_actions, stream["infos"]["legals"][rows] > 0)
        np.testing.assert_array_equal(episode.state, stream["infos"]["state"][rows])
        start += length
    assert not data.obs[1, LENGTHS[1] :].any()  # padding is zero
    meta = data.metadata
    assert meta.env_id == "og_marl/smac_v1/3m" and meta.quality == "good" and meta.n_actions == A
    source = meta.behavior_policy
    assert (source["vault"], source["uid"], source["vault_version"]) == ("og_marl/smac_v1/3m", "Good", 1.2)
    assert source["vault_metadata"]["recorded_by"] == "a test"


def test_export_gives_the_vault_back_bit_for_bit(flashbax_vault, tmp_path):
    vault_dir, _ = flashbax_vault
    path = import_vault(vault_dir, "Good", tmp_path / "3m.h5")
    target = export_vault(path, tmp_path / "out" / "3m.vlt")
    assert target == (tmp_path / "out" / "3m.vlt" / "Good").resolve()
    original, original_meta = read_vault(vault_dir, "Good")
    back, back_meta = read_vault(target.parent, "Good")
    assert back_meta == original_meta
    assert json.loads((target / "metadata.json").read_text()) == json.loads(
        (vault_dir / "Good" / "metadata.json").read_text()
    )
    assert sorted(back) == sorted(original)
    for name, array in original.items():
        assert back[name].dtype == array.dtype and back[name].tobytes() == array.tobytes(), name


def test_flashbax_reads_an_exported_marlkd_dataset(tiny_dataset_arrays, tmp_path):
    pytest.importorskip("flashbax")
    from flashbax.vault import Vault

    arrays, metadata = tiny_dataset_arrays
    for name in ("obs", "rewards", "state"):
        arrays[name] += 0.0  # the fixture pads with -0.0 (x * 0); a Vault has no padding to keep it in
    path = write_dataset(tmp_path / "tiny.h5", arrays, metadata)
    target = export_vault(path, tmp_path / "vaults" / "tiny.vlt", "Mine")
    experience = Vault("tiny.vlt", rel_dir=str(tmp_path / "vaults"), vault_uid="Mine").read().experience
    mask = arrays["mask"]
    np.testing.assert_array_equal(np.asarray(experience["observations"])[0], arrays["obs"][mask])
    np.testing.assert_array_equal(np.asarray(experience["actions"])[0], arrays["actions"][mask])
    legals = np.asarray(experience["infos"]["legals"])[0]
    np.testing.assert_array_equal(legals > 0, arrays["avail_actions"][mask])
    # and the same dataset comes back, checksum and metadata included
    again = load_dataset(import_vault(target.parent, "Mine", tmp_path / "again.h5"))
    before = load_dataset(path)
    assert again.metadata.checksum == before.metadata.checksum
    known = before.metadata.to_dict().items()
    same = {k: v for k, v in known if not (isinstance(v, float) and math.isnan(v))}
    assert {k: again.metadata.to_dict()[k] for k in same} == same


def test_export_refuses_episodes_a_flat_stream_cannot_split(tiny_dataset_arrays, tmp_path):
    arrays, metadata = tiny_dataset_arrays
    arrays["truncations"][1, :] = False  # episode 1 ends with no agent done
    arrays["terminals"][1, :] = False
    path = write_dataset(tmp_path / "tiny.h5", arrays, metadata)
    with pytest.raises(DatasetError, match=r"tiny\.h5: fields 'terminals'/'truncations': episode 1 ends"):
        export_vault(path, tmp_path / "v.vlt", "x")
    assert not (tmp_path / "v.vlt" / "x").exists()


def _copy(vault_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bad.vlt"
    shutil.copytree(vault_dir, target)
    return target


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda v: None, r"bad\.vlt/Medium: no dataset 'Medium' in this Vault \(uids found: Good\)"),
        (lambda v: (v / "Good" / "metadata.json").unlink(), r"Good/metadata\.json: file not found"),
        (lambda v: (v / "Good" / "metadata.json").write_text("{"), r"metadata\.json: not valid JSON"),
        (
            lambda v: _edit(v, lambda m: m.update(version=2.0)),
            r"metadata\.json: field 'version': Vault version 2\.0",
        ),
        (
            lambda v: _edit(v, lambda m: m["structure_shape"].pop("rewards")),
            r"metadata\.json: field 'rewards': missing from structure_shape",
        ),
        (
            lambda v: _edit(v, lambda m: m["structure_dtype"].update(actions="int64")),
            r"Good: field 'actions\.': stored dtype int32, the metadata says 'int64'",
        ),
        (
            lambda v: _edit(v, lambda m: m["structure_shape"].update(actions="(1, 64, 4)")),
            r"Good: field 'actions\.': stored shape \(1, 10000000000000, 3\) does not match",
        ),
        (lambda v: shutil.rmtree(v / "Good" / "d"), r"Good: field '(vault_index|\w+\.)': cannot"),
    ],
)
def test_bad_vaults_fail_naming_path_and_field(flashbax_vault, tmp_path, damage, message):
    vault = _copy(flashbax_vault[0], tmp_path)
    damage(vault)
    uid = "Medium" if "Medium" in message else "Good"
    with pytest.raises(VaultError, match=message):
        import_vault(vault, uid, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def _edit(vault: Path, change) -> None:
    path = vault / "Good" / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def test_invalid_values_are_reported_against_the_vault(flashbax_vault, tmp_path):
    vault = _copy(flashbax_vault[0], tmp_path)
    flat, _ = read_vault(vault, "Good")
    legals_file = vault / "Good"
    import tensorstore as ts

    store = ts.open(
        {
            "driver": "zarr",
            "kvstore": {"driver": "ocdbt", "base": f"file://{legals_file}", "path": "infos.legals."},
        },
        open=True,
    ).result()
    legals = flat["avail_actions"].copy()
    legals[4, 1, :] = 0.0  # agent 1 at step 4 has no available action, so its action was unavailable
    store[0, : legals.shape[0]].write(legals).result()
    expected = r"bad\.vlt/Good \(imported into .*\): field 'avail_actions': the action"
    with pytest.raises(VaultError, match=expected):
        import_vault(vault, "Good", tmp_path / "x.h5")


def test_cli_import_train_with_evaluation_off_and_export(flashbax_vault, tmp_path, capsys):
    vault_dir, _ = flashbax_vault
    data = tmp_path / "3m.h5"
    assert main(["dataset", "import", "og-marl", str(vault_dir), "--uid", "Good", "--out", str(data)]) == 0
    out = capsys.readouterr().out
    assert "4 episodes, 26 steps" in out and "evaluation off" in out
    from marlkd.training import train

    config = RunConfig(
        method="idt",
        data=str(data),
        out=str(tmp_path / "run"),
        train=TrainConfig(steps=2, batch_size=4, warmup_steps=1, precision="fp32", log_every=1),
        eval=EvalConfig(episodes=2),
        algo=IDTConfig(**SMALL_DT),
    )
    results = train(config, progress=False)
    assert "return_mean" not in results and results["train_steps"] == 2
    assert "evaluation off" in capsys.readouterr().err
    assert main(["dataset", "export", "og-marl", str(data), "--out", str(tmp_path / "v.vlt")]) == 0
    assert (tmp_path / "v.vlt" / "Good" / "metadata.json").is_file()
    assert main(["dataset", "export", "og-marl", str(data), "--out", str(tmp_path / "v.vlt")]) == 2
    assert "exists already" in capsys.readouterr().err


def test_a_registered_evaluator_evaluates_imported_data(flashbax_vault, tmp_path):
    from marlkd.evaluate import _EVALUATORS, EvalResult, register_evaluator
    from marlkd.training import train

    vault_dir, _ = flashbax_vault
    data = import_vault(vault_dir, "Good", tmp_path / "3m.h5", env_id="test-vault-env")
    calls = []

    def evaluator(policy, env_kwargs, episodes, seed):
        policy.reset(episodes)
        actions = policy.act(np.zeros((episodes, N, O), np.float32), np.ones((episodes, N, A), bool))
        calls.append(actions.shape)
        return EvalResult(np.full((episodes, N), 3.0), np.ones(episodes, np.int64), episodes)

    register_evaluator("test-vault-env", evaluator)
    try:
        config = RunConfig(
            method="idt",
            data=str(data),
            out=str(tmp_path / "run"),
            train=TrainConfig(steps=1, batch_size=4, warmup_steps=1, precision="fp32"),
            eval=EvalConfig(episodes=3),
            algo=IDTConfig(**SMALL_DT),
        )
        results = train(config, progress=False)
    finally:
        _EVALUATORS.pop("test-vault-env")
    assert results["return_mean"] == 3.0 and calls == [(3, N)]


def test_d4rl_flat_file_imports_with_key_mapping(tmp_path):
    stream = _stream(1)
    source = tmp_path / "flat.h5"
    with h5py.File(source, "w") as file:
        file["observations"] = stream["observations"]
        file["actions"] = stream["actions"].astype(np.int64)
        file["rewards"] = stream["rewards"].mean(axis=1)  # a team reward, (L,)
        file["terminals"] = stream["terminals"].all(axis=1)
        file["timeouts"] = (stream["terminals"] + stream["truncations"] > 0).all(axis=1) & ~stream[
            "terminals"
        ].all(axis=1)
        file["infos/legals"] = stream["infos"]["legals"] > 0
    path = import_d4rl(
        source, tmp_path / "d.h5", env_id="my-env", keys={"avail_actions": "infos/legals"}, quality="expert"
    )
    data = load_dataset(path)
    assert data.episode_lengths().tolist() == list(LENGTHS) and data.state is None
    np.testing.assert_allclose(data.rewards[0, :, 0], data.rewards[0, :, 2])  # the team reward, per agent
    assert data.truncations[1, LENGTHS[1] - 1].all() and not data.terminals[1].any()
    assert data.metadata.behavior_policy["keys"]["avail_actions"] == "infos/legals"
    with pytest.raises(DatasetError, match=r"flat\.h5: field 'state': key 'nope' not found"):
        import_d4rl(source, tmp_path / "e.h5", env_id="x", keys={"state": "nope", "obs": "observations"})
    with pytest.raises(DatasetError, match="field 'obs': key 'missing' not found"):
        import_d4rl(source, tmp_path / "e.h5", env_id="x", keys={"obs": "missing"})


def test_vault_name_is_the_last_three_path_parts(tmp_path):
    from marlkd.data.vault import vault_name

    assert vault_name(tmp_path / "vaults" / "og_marl" / "smac_v1" / "3m.vlt") == "og_marl/smac_v1/3m"
    assert vault_name("/3m.vlt") == "3m"
