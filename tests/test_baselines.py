"""The baselines' own parts: transitions, loss terms on hand-computed values, and short runs that learn.

BC, CQL, BCQ and ICQ learn from tiny in-memory datasets; GAIL and AIRL interact with ``test-match``
(``tiny_envs``), whose expert plays the one-hot target in its observation.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tiny_envs
from marlkd.algos import ALGOS, BuildContext
from marlkd.algos._value import double_q_target
from marlkd.algos.adversarial import Batch, discriminator_loss
from marlkd.algos.airl import AIRLDiscriminator
from marlkd.algos.bc import bc_loss
from marlkd.algos.bcq import allowed_actions, filtered_q
from marlkd.algos.cql import conservative_penalty
from marlkd.algos.gail import GAILDiscriminator
from marlkd.algos.icq import LinearMixer, batch_softmax_weights, critic_inputs
from marlkd.config import TrainConfig
from marlkd.data import collect_episodes, load_dataset, write_dataset
from marlkd.data.format import OfflineDataset
from marlkd.data.transitions import TransitionSampler, bootstrap_weights, team_end
from marlkd.errors import ConfigError
from marlkd.models.agent_nets import AgentMLP, ObservationWindow
from marlkd.optim import optimizer_step
from marlkd.run_config import RunConfig

MATCH_RANDOM_RETURN = 8 / 3  # test-match: max_steps / n_actions per agent


def make_ctx(dataset: OfflineDataset, method: str, tmp_path: Path, lr: float = 1e-3, **algo: Any):
    """A build context with a fast optimizer (no warm-up, no clipping, fp32) and small networks."""
    return BuildContext(
        dataset=dataset,
        config=ALGOS[method].config_cls(**algo),
        train=TrainConfig(batch_size=64, lr=lr, weight_decay=0.0, warmup_steps=0, grad_clip=0.0),
        device=torch.device("cpu"),
        autocast_dtype=None,
        run_dir=tmp_path,
        seed=0,
    )


def bandit(tmp_path: Path, expert: bool = False, episodes: int = 256) -> OfflineDataset:
    """Two agents, O = A = 3, two steps per episode (terminal at the second). Agent 0's reward for action a is
    o[a], agent 1's is -o[a]: the best actions are the argmax and the argmin of the agent's observation.
    Actions are uniformly random, or the best ones with ``expert``."""
    rng = np.random.default_rng(0)
    E, T, N, A = episodes, 2, 2, 3
    obs = rng.normal(size=(E, T, N, A)).astype(np.float32)
    best = np.stack((obs[:, :, 0].argmax(-1), obs[:, :, 1].argmin(-1)), axis=-1)  # (E, T, N)
    actions = best if expert else rng.integers(A, size=(E, T, N))
    terminals = np.zeros((E, T, N), dtype=bool)
    terminals[:, -1] = True
    arrays = {
        "obs": obs,
        "actions": actions.astype(np.int64),
        "rewards": np.take_along_axis(obs, actions[..., None], -1)[..., 0]
        * np.array([1.0, -1.0], np.float32),
        "mask": np.ones((E, T), dtype=bool),
        "terminals": terminals,
        "truncations": np.zeros((E, T, N), dtype=bool),
        "state": obs.reshape(E, T, -1),
    }
    metadata = {"env_id": "test-bandit", "n_actions": A, "quality": "random", "seed": 0}
    return load_dataset(write_dataset(tmp_path / "bandit.h5", arrays, metadata))


def bandit_accuracy(policy, episodes: int = 512) -> float:
    """Fraction of agents' greedy actions that are the best ones on fresh observations."""
    obs = np.random.default_rng(1).normal(size=(episodes, 2, 3)).astype(np.float32)
    best = np.stack((obs[:, 0].argmax(-1), obs[:, 1].argmin(-1)), axis=-1)
    policy.reset(episodes)
    return float((policy.act(obs, None) == best).mean())


def run(algo, updates: int) -> list[dict[str, float]]:
    return [algo.update(step) for step in range(updates)]


# ------------------------------------------------------------------------------------------ transitions


def test_transition_sampler_flattens_valid_steps(tiny_dataset: Path) -> None:
    dataset = load_dataset(tiny_dataset)  # 6 episodes of lengths 1..6 (T = 6), N = 2
    sampler = TransitionSampler(dataset)
    assert sampler.num_transitions == 21
    batch = sampler.gather(torch.arange(sampler.num_transitions))
    e, t = batch.episode.numpy(), batch.step.numpy()
    np.testing.assert_array_equal(batch.obs.numpy(), dataset.obs[e, t])
    np.testing.assert_array_equal(batch.state.numpy(), dataset.state[e, t])
    has_next = t + 1 < np.arange(1, 7)[e]
    np.testing.assert_array_equal(batch.has_next.numpy(), has_next)
    following = np.minimum(t + 1, 5)
    np.testing.assert_array_equal(batch.next_obs.numpy()[has_next], dataset.obs[e, following][has_next])
    np.testing.assert_array_equal(
        batch.next_actions.numpy()[has_next], dataset.actions[e, following][has_next]
    )
    # the last stored step of an episode stands in for the unstored step after it
    np.testing.assert_array_equal(batch.next_obs.numpy()[~has_next], batch.obs.numpy()[~has_next])
    np.testing.assert_array_equal(batch.next_state.numpy()[~has_next], batch.state.numpy()[~has_next])
    # episodes shorter than T terminate, the full-length one is truncated; both only at their last step
    np.testing.assert_array_equal(batch.terminal.numpy()[:, 0], ~has_next & (e < 5))
    np.testing.assert_array_equal(batch.truncated.numpy()[:, 0], ~has_next & (e == 5))
    assert batch.alive.all()
    assert sampler.sample(7, torch.Generator().manual_seed(0)).obs.shape == (7, 2, 3)


def test_transition_sampler_without_state_uses_joint_observations(tiny_dataset_arrays, tmp_path) -> None:
    arrays, metadata = tiny_dataset_arrays
    del arrays["state"]
    sampler = TransitionSampler(load_dataset(write_dataset(tmp_path / "d.h5", arrays, metadata)))
    assert sampler.state_dim == 2 * 3
    batch = sampler.gather(torch.arange(4))
    torch.testing.assert_close(batch.state, batch.obs.flatten(1))


def test_agents_finished_before_their_team_are_not_alive(tiny_dataset_arrays, tmp_path) -> None:
    arrays, metadata = tiny_dataset_arrays
    arrays["terminals"][5, 2, 1] = True  # agent 1 of the full-length episode ends at t = 2
    sampler = TransitionSampler(load_dataset(write_dataset(tmp_path / "d.h5", arrays, metadata)))
    batch = sampler.gather(torch.arange(sampler.num_transitions))
    last = batch.episode == 5
    assert batch.alive[last, 0].all()
    np.testing.assert_array_equal(batch.alive[last, 1].numpy(), [True, True, True, False, False, False])


def test_transition_sampler_windows_hold_each_agents_last_observations(tiny_dataset: Path) -> None:
    dataset = load_dataset(tiny_dataset)  # 6 episodes of lengths 1..6, N = 2, O = 3
    sampler = TransitionSampler(dataset, history=3)
    batch = sampler.gather(torch.arange(sampler.num_transitions))
    assert batch.obs.shape == (21, 2, 9)
    for row in (0, 5, 20):  # episode 0 step 0, episode 2 step 2, episode 5 step 5
        e, t = int(batch.episode[row]), int(batch.step[row])
        expected = np.zeros((2, 3, 3), np.float32)  # (N, K, O), oldest first, zeros before the start
        for k in range(3):
            if t - 2 + k >= 0:
                expected[:, k] = dataset.obs[e, t - 2 + k]
        np.testing.assert_array_equal(batch.obs[row].numpy(), expected.reshape(2, 9))
    # the window at t+1 ends with o_{t+1}
    has_next = batch.has_next
    torch.testing.assert_close(
        batch.next_obs[has_next][..., -3:],
        torch.as_tensor(dataset.obs[batch.episode[has_next].numpy(), batch.step[has_next].numpy() + 1]),
    )


def test_a_truncated_last_step_bootstraps_by_default(tiny_dataset: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_dataset)  # the full-length episode 5 is truncated at its last step
    sampler = TransitionSampler(dataset)
    batch = sampler.gather(torch.arange(sampler.num_transitions))
    for method in ("cql", "bcq", "icq", "airl"):  # the default, and the run's config.json records it
        saved = RunConfig(method=method, data="d.h5", out=str(tmp_path / method)).to_dict()
        assert saved["algo"]["truncation"] == "bootstrap"
    bootstrap, weight = bootstrap_weights(batch.terminal, batch.truncated, batch.has_next, "bootstrap")
    cut = batch.truncated[:, 0] & ~batch.has_next
    ended = batch.terminal[:, 0]
    assert cut.sum() == 1 and ended.sum() == 5
    assert bootstrap[cut].eq(1).all() and bootstrap[ended].eq(0).all() and weight.eq(1).all()
    # CQL's target at the cut step: r + gamma * Qbar(o_T, argmax Q(o_T)), o_T standing in for the next one
    algo = ALGOS["cql"].build(make_ctx(dataset, "cql", tmp_path, hidden=8))
    with torch.no_grad():
        q_next = algo.q_target(batch.obs[cut])
        target = double_q_target(
            algo.q(batch.obs[cut]), q_next, None, batch.rewards[cut], bootstrap[cut], 0.9
        )
        expected = (
            batch.rewards[cut] + 0.9 * q_next.gather(-1, algo.q(batch.obs[cut]).argmax(-1, True))[..., 0]
        )
    torch.testing.assert_close(target, expected)
    assert not torch.allclose(target, batch.rewards[cut])


def test_team_end_ignores_agents_that_finished_earlier() -> None:
    # Highway: car 1 crashed at an earlier step (its terminated flag stays set, it is no longer alive);
    # car 0 is cut by the time limit at the team's last step: the team's end is a truncation.
    terminal = torch.tensor([[False, True], [True, True], [False, False]])
    truncated = torch.tensor([[True, False], [False, False], [False, False]])
    alive = torch.tensor([[True, False], [True, True], [True, True]])
    has_next = torch.tensor([False, False, True])
    team_terminal, team_truncated = team_end(terminal, truncated, alive, has_next)
    assert team_terminal.tolist() == [False, True, False]
    assert team_truncated.tolist() == [True, False, False]


def test_bootstrap_weights_under_both_truncation_rules() -> None:
    terminal = torch.tensor([[False], [True], [False], [False]])
    truncated = torch.tensor([[False], [False], [True], [True]])
    has_next = torch.tensor([True, False, False, True])
    bootstrap, weight = bootstrap_weights(terminal, truncated, has_next, "bootstrap")
    assert bootstrap.flatten().tolist() == [1.0, 0.0, 1.0, 1.0] and weight.flatten().tolist() == [1.0] * 4
    bootstrap, weight = bootstrap_weights(terminal, truncated, has_next, "final")
    assert bootstrap.flatten().tolist() == [1.0, 0.0, 0.0, 0.0] and weight.flatten().tolist() == [1.0] * 4
    bootstrap, weight = bootstrap_weights(terminal, truncated, has_next, "drop")
    assert bootstrap.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]
    assert weight.flatten().tolist() == [1.0, 1.0, 0.0, 1.0]  # a cut without a stored next step is left out
    with pytest.raises(ValueError, match="truncation rule"):
        bootstrap_weights(terminal, truncated, has_next, "other")


# ------------------------------------------------------------------------------------------ BC


def test_bc_loss_matches_hand_values(tiny_dataset: Path) -> None:
    batch = TransitionSampler(load_dataset(tiny_dataset)).gather(torch.arange(2))
    batch.actions = torch.tensor([[0, 1], [0, 0]])
    batch.avail = torch.ones(2, 2, 3, dtype=torch.bool)
    batch.avail[1, 1, 2] = False
    logits = torch.zeros(2, 2, 3)
    logits[0, 0, 0] = math.log(2.0)  # p(a=0) = 2/4
    # agent 0: -log(1/2) and -log(1/3), mean; agent 1: -log(1/3) and (action 2 masked) -log(1/2), mean
    expected = 2 * (math.log(2.0) + math.log(3.0)) / 2
    loss, accuracy = bc_loss(logits, batch)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(accuracy) == pytest.approx(3 / 4)  # argmax 0 everywhere: wrong for agent 1's first


def test_bc_learns_each_agents_own_deterministic_rule(tmp_path: Path) -> None:
    dataset = bandit(tmp_path, expert=True)
    algo = ALGOS["bc"].build(make_ctx(dataset, "bc", tmp_path, hidden=32))
    before = bandit_accuracy(algo.policy())
    metrics = run(algo, 300)
    assert (
        np.mean([m["accuracy"] for m in metrics[-20:]]) > 0.9 > np.mean([m["accuracy"] for m in metrics[:5]])
    )
    assert metrics[-1]["loss/action"] < 0.5 * metrics[0]["loss/action"]
    assert bandit_accuracy(algo.policy()) > max(0.85, before + 0.3)


# ------------------------------------------------------------------------------------------ CQL


def test_cql_penalty_and_double_q_target_match_hand_values() -> None:
    q = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])  # (B=1, N=2, A=3)
    actions = torch.tensor([[0, 0]])
    avail = torch.tensor([[[True, True, True], [True, True, False]]])
    penalty = conservative_penalty(q, actions, avail)
    expected = [math.log(math.e + math.e**2 + math.e**3) - 1.0, math.log(math.e + math.e**2) - 1.0]
    torch.testing.assert_close(penalty, torch.tensor([expected]))

    online_next = torch.tensor([[[0.0, 5.0, 9.0], [4.0, 1.0, 0.0]]])
    target_next = torch.tensor([[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]])
    next_avail = torch.tensor([[[True, True, False], [True, True, True]]])
    rewards, bootstrap = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    target = double_q_target(online_next, target_next, next_avail, rewards, bootstrap, 0.9)
    # agent 0: the online net picks action 1 (action 2 unavailable), valued 20 by the target net
    torch.testing.assert_close(target, torch.tensor([[1.0 + 0.9 * 20.0, 2.0]]))


@pytest.mark.parametrize("method", ["cql", "bcq", "icq"])
def test_value_based_methods_beat_random_behaviour_on_a_bandit(method: str, tmp_path: Path) -> None:
    dataset = bandit(tmp_path)  # uniformly random actions: behaviour cloning would be at chance (1/3)
    extra = {"target_tau": 0.05} if method != "icq" else {"target_tau": 0.05, "mixer_hidden": 16}
    algo = ALGOS[method].build(make_ctx(dataset, method, tmp_path, hidden=32, **extra))
    before = bandit_accuracy(algo.policy())
    run(algo, 300)
    assert before < 0.6 and bandit_accuracy(algo.policy()) > 0.8


# ------------------------------------------------------------------------------------------ BCQ


def test_bcq_filter_keeps_actions_near_the_most_likely() -> None:
    g_logits = torch.log(torch.tensor([[[0.5, 0.3, 0.1, 0.1]]]))  # ratios to the max: 1, 0.6, 0.2, 0.2
    assert allowed_actions(g_logits, None, 0.3).tolist() == [[[True, True, False, False]]]
    assert allowed_actions(g_logits, None, 0.1).tolist() == [[[True, True, True, True]]]
    avail = torch.tensor([[[False, True, True, True]]])  # without action 0, action 1 is the max
    assert allowed_actions(g_logits, avail, 0.5).tolist() == [[[False, True, False, False]]]
    assert allowed_actions(g_logits, avail, 0.0).tolist() == avail.tolist()
    q = torch.tensor([[[1.0, 2.0, 9.0, 3.0]]])
    assert filtered_q(q, g_logits, None, 0.3).argmax(-1).item() == 1  # 9.0 is filtered out


# ------------------------------------------------------------------------------------------ ICQ


def test_icq_weights_are_a_batch_softmax_with_mean_one() -> None:
    values = torch.tensor([0.0, math.log(2.0), math.log(3.0)])
    torch.testing.assert_close(
        batch_softmax_weights(values, torch.ones(3, dtype=torch.bool), 1.0), torch.tensor([0.5, 1.0, 1.5])
    )
    include = torch.tensor([True, True, False])
    torch.testing.assert_close(batch_softmax_weights(values, include, 1.0), torch.tensor([2 / 3, 4 / 3, 0.0]))
    # alpha halves the temperature: weights proportional to exp(2 v) = 1, 4, 9
    torch.testing.assert_close(
        batch_softmax_weights(values, torch.ones(3, dtype=torch.bool), 0.5), torch.tensor([3, 12, 27]) / 14
    )
    per_agent = batch_softmax_weights(torch.zeros(2, 2), torch.tensor([[True, False], [True, False]]), 1.0)
    torch.testing.assert_close(per_agent, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # a column per agent


def test_icq_mixer_is_monotone_and_linear_in_agent_values() -> None:
    mixer = LinearMixer(n_agents=3, state_dim=4, hidden=8)
    state = torch.randn(5, 4)
    k = mixer.agent_weights(state)
    assert (k >= 0).all()
    q = torch.randn(5, 3)
    torch.testing.assert_close(mixer(q + 1.0, state) - mixer(q, state), k.sum(-1))


# ------------------------------------------------------------------------------------------ GAIL, AIRL


def _batch(logit_shape: tuple[int, ...] = (1, 2), **values: torch.Tensor) -> Batch:
    B, N = logit_shape
    fields = {
        "obs": torch.zeros(B, N, 4),
        "actions": torch.zeros(B, N, dtype=torch.int64),
        "next_obs": torch.zeros(B, N, 4),
        "done": torch.zeros(B, N),
        "log_pi": torch.zeros(B, N),
        "weight": torch.ones(B, N),
    }
    fields.update(values)
    return Batch(**fields)


def test_discriminator_objective_matches_hand_values() -> None:
    # D = 1/2 on both sides: -log(1/2) twice per agent; two agents
    zeros = torch.zeros(1, 2)
    loss = discriminator_loss(zeros, zeros, torch.ones(1, 2), torch.ones(1, 2))
    assert float(loss) == pytest.approx(2 * 2 * math.log(2.0))
    # D(data) = 3/4 and D(policy) = 1/4: -log(3/4) on each side; a zero weight removes an entry
    data, policy = torch.full((2, 1), math.log(3.0)), torch.full((2, 1), -math.log(3.0))
    data[1], policy[1] = -10.0, 10.0
    weight = torch.tensor([[1.0], [0.0]])
    loss = discriminator_loss(data, policy, weight, weight)
    assert float(loss) == pytest.approx(-2 * math.log(0.75), rel=1e-6)


@pytest.mark.parametrize("form", ["positive", "logit", "negative"])
def test_gail_rewards_match_their_forms(form: str) -> None:
    disc = GAILDiscriminator(n_agents=2, obs_dim=4, n_actions=3, hidden=8, reward=form)
    batch = _batch(obs=torch.randn(5, 2, 4), actions=torch.randint(3, (5, 2)), log_pi=torch.zeros(5, 2))
    d = torch.sigmoid(disc.logits(batch)).double()
    expected = {
        "positive": -torch.log(1 - d),
        "logit": torch.log(d) - torch.log(1 - d),
        "negative": torch.log(d),
    }
    torch.testing.assert_close(disc.reward(batch).double(), expected[form], rtol=1e-5, atol=1e-6)


def test_airl_f_is_reward_plus_shaping() -> None:
    gamma = 0.9
    disc = AIRLDiscriminator(n_agents=2, obs_dim=4, n_actions=3, hidden=8, gamma=gamma)
    with torch.no_grad():  # constant g and h per agent: g = (0.5, 1), h = (2, -1)
        for net, constants in ((disc.g, (0.5, 1.0)), (disc.h, (2.0, -1.0))):
            net.net[-1].weight.zero_()
            net.net[-1].bias.copy_(torch.tensor(constants).view(2, 1, 1))
    log_pi = torch.log(torch.tensor([[0.25, 0.5], [0.25, 0.5]]))
    batch = _batch((2, 2), done=torch.tensor([[0.0, 0.0], [1.0, 1.0]]), log_pi=log_pi)
    f = torch.tensor(
        [[0.5 + gamma * 2.0 - 2.0, 1.0 - gamma * 1.0 + 1.0], [0.5 - 2.0, 1.0 + 1.0]]
    )  # g + gamma (1 - done) h(o') - h(o)
    torch.testing.assert_close(disc.f(batch), f)
    torch.testing.assert_close(disc.logits(batch), f - log_pi)
    torch.testing.assert_close(disc.reward(batch), f - log_pi)  # log D - log(1 - D)


def _match_expert_dataset(tmp_path: Path) -> OfflineDataset:
    def expert(obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return obs[..., :-1].argmax(-1).astype(np.int64)  # the one-hot target

    kwargs = tiny_envs.spec().kwargs
    arrays = collect_episodes(tiny_envs.ENV_ID, kwargs, expert, 64, seed=0, num_envs=64)
    metadata = {
        "env_id": tiny_envs.ENV_ID,
        "env_kwargs": kwargs,
        "n_actions": 3,
        "quality": "good",
        "seed": 0,
    }
    return load_dataset(write_dataset(tmp_path / "expert.h5", arrays, metadata))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gail", "airl"])
def test_adversarial_imitation_learns_the_expert(method: str, tmp_path: Path) -> None:
    dataset = _match_expert_dataset(tmp_path)
    budget = 64 * 8 * 30
    config = {
        "env_steps": budget,
        "num_envs": 64,
        "hidden": 32,
        "lr": 3e-3,
        "critic_lr": 3e-3,
        "ent_coef": 0.0,
        "disc_hidden": 32,
        "disc_lr": 3e-3,
        "disc_batch": 128,
        "disc_steps": 8,
    }
    algo = ALGOS[method].build(make_ctx(dataset, method, tmp_path, **config))
    assert algo.num_updates == 30
    metrics = run(algo, algo.num_updates)
    assert algo.env_steps == budget
    returns = [m["return/env"] for m in metrics]
    assert np.mean(returns[:3]) < MATCH_RANDOM_RETURN + 1.0
    assert np.mean(returns[-5:]) > MATCH_RANDOM_RETURN + 2.0


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("method", ["bc", "cql", "bcq", "icq", "gail", "airl"])
def test_resumed_training_continues_exactly(method: str, tmp_path: Path) -> None:
    dataset = _match_expert_dataset(tmp_path)
    small = {"hidden": 16}
    if ALGOS[method].interacts:
        small.update(env_steps=64 * 4, num_envs=8, disc_batch=16, disc_hidden=16)

    def build():
        torch.manual_seed(0)
        return ALGOS[method].build(make_ctx(dataset, method, tmp_path, **small))

    straight = build()
    run(straight, 4)
    first = build()
    run(first, 2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = build()
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    for step in (2, 3):
        resumed.update(step)
    for name, value in straight.state_dict()["model"].items():
        torch.testing.assert_close(resumed.state_dict()["model"][name], value, msg=name)


def test_configs_name_their_fields() -> None:
    with pytest.raises(ConfigError, match="algo.alpha"):
        ALGOS["cql"].config_cls(alpha=-1.0)
    with pytest.raises(ConfigError, match="algo.threshold"):
        ALGOS["bcq"].config_cls(threshold=1.0)
    with pytest.raises(ConfigError, match="algo.truncation"):
        ALGOS["icq"].config_cls(truncation="sometimes")
    with pytest.raises(ConfigError, match="algo.reward"):
        ALGOS["gail"].config_cls(reward="other")
    with pytest.raises(ConfigError, match="algo.env_steps"):
        ALGOS["gail"].config_cls(env_steps=0)
    with pytest.raises(ConfigError, match="algo.num_envs"):
        ALGOS["airl"].config_cls(num_envs=0)


# ---------------------------------------------------------------------------------- fair-baseline fixes


def test_icq_mixing_weights_sum_to_one_without_bias() -> None:
    mixer = LinearMixer(n_agents=3, state_dim=4, hidden=8)
    state = torch.randn(7, 4) * 5
    k = mixer.agent_weights(state)
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum(-1), torch.ones(7))
    torch.testing.assert_close(mixer(torch.zeros(7, 3), state), torch.zeros(7))  # no bias
    q = torch.randn(7, 3)
    torch.testing.assert_close(mixer(q + 2.0, state), mixer(q, state) + 2.0)  # a convex combination


def test_icq_critic_reads_state_observation_and_agent_id(tmp_path: Path) -> None:
    dataset = bandit(tmp_path)
    algo = ALGOS["icq"].build(make_ctx(dataset, "icq", tmp_path, hidden=8, share_weights=True))
    assert algo.cfg.critic_alpha == 1000.0 and algo.cfg.actor_alpha == 0.1
    batch = algo.sampler.gather(torch.arange(4))
    inputs = critic_inputs(batch.state, batch.obs)  # (B, N, S + O)
    assert inputs.shape == (4, 2, algo.sampler.state_dim + 3)
    torch.testing.assert_close(inputs[:, 1, : algo.sampler.state_dim], batch.state)
    # one shared critic: the agents' rows differ through the id even on equal inputs
    same = inputs[:, :1].expand(-1, 2, -1)
    q = algo.q(same)
    assert algo.q.members == 1 and not torch.allclose(q[:, 0], q[:, 1])


def test_per_agent_clipping_leaves_other_agents_steps_unchanged() -> None:
    def step(scale0: float, members: int) -> torch.Tensor:
        torch.manual_seed(0)
        net = AgentMLP(3, 4, 8, 2)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        x = torch.randn(16, 3, 4)
        weights = torch.tensor([scale0, 1.0, 1.0])
        loss = (net(x).square().sum(-1).mean(0) * weights).sum()
        before = [p.detach().clone() for p in net.parameters()]
        optimizer_step(loss, optimizer, None, clip=0.5, members=members)
        return torch.cat(
            [(p.detach() - b).flatten(1) for p, b in zip(net.parameters(), before, strict=True)], dim=1
        )

    calm, spike = step(1.0, 3), step(1000.0, 3)  # (agents, parameters): each agent's step
    torch.testing.assert_close(spike[1:], calm[1:])  # agent 0's spike does not touch agents 1 and 2
    assert spike[0].norm() == pytest.approx(0.1 * 0.5, rel=1e-4)  # its own step is clipped to the bound
    coupled = step(1000.0, 0)  # a global clip: agent 0's spike shrinks everyone's step
    assert coupled[1:].norm() < 0.1 * calm[1:].norm()


def test_shared_network_with_agent_ids_and_windowed_policy(tmp_path: Path) -> None:
    net = AgentMLP(3, 4, 8, 2, share=True, agent_id=True)
    assert net.members == 1 and net.net[0].in_features == 4 + 3
    x = torch.randn(5, 1, 4).expand(-1, 3, -1)
    out = net(x)
    assert out.shape == (5, 3, 2) and not torch.allclose(out[:, 0], out[:, 1])
    window = ObservationWindow(3)
    first, second = torch.ones(2, 3, 4), 2 * torch.ones(2, 3, 4)
    window.push(first)
    stacked = window.push(second)  # (B, N, K * O), oldest first, zeros before the start
    torch.testing.assert_close(stacked[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [2.0] * 4))
    window.reset()
    torch.testing.assert_close(window.push(second)[0, 0, :8], torch.zeros(8))
    # a BC policy trained on windows acts on windows of the same size
    dataset = bandit(tmp_path, expert=True)
    algo = ALGOS["bc"].build(make_ctx(dataset, "bc", tmp_path, hidden=8, history=2, agent_id=True))
    run(algo, 2)
    policy = algo.policy()
    policy.reset(4)
    assert policy.act(np.zeros((4, 2, 3), np.float32), None).shape == (4, 2)


def test_hard_target_updates_copy_every_period(tmp_path: Path) -> None:
    dataset = bandit(tmp_path)
    algo = ALGOS["cql"].build(make_ctx(dataset, "cql", tmp_path, hidden=8, target_period=3))
    initial = [p.clone() for p in algo.q_target.parameters()]
    run(algo, 2)
    assert all(torch.equal(a, b) for a, b in zip(initial, algo.q_target.parameters(), strict=True))
    algo.update(2)
    assert all(
        torch.equal(a, b) for a, b in zip(algo.q.parameters(), algo.q_target.parameters(), strict=True)
    )


@pytest.mark.parametrize("method", ["gail", "airl"])
def test_adversarial_loop_spends_its_budget_to_within_one_rollout(method: str, tmp_path: Path) -> None:
    def expert(obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return obs[..., :-1].argmax(-1).astype(np.int64)

    kwargs = tiny_envs.early_spec().kwargs
    arrays = collect_episodes(tiny_envs.EARLY_ENV_ID, kwargs, expert, 16, seed=0, num_envs=16)
    metadata = {"env_id": tiny_envs.EARLY_ENV_ID, "env_kwargs": kwargs, "n_actions": 3, "seed": 0}
    dataset = load_dataset(write_dataset(tmp_path / "early.h5", arrays, metadata))
    budget, num_envs = 1000, 8
    small = {"env_steps": budget, "num_envs": num_envs, "hidden": 8, "disc_hidden": 8, "disc_batch": 16}
    algo = ALGOS[method].build(make_ctx(dataset, method, tmp_path, **small))
    rollout = num_envs * 8  # one rollout: num_envs copies of at most max_steps steps
    assert algo.num_updates == math.ceil(budget / rollout)  # the estimate at full-length episodes
    step = 0
    while step < algo.num_updates:  # the training loop re-reads the count after every update
        algo.update(step)
        step += 1
    # a random policy misses early: episodes are short, so the loop takes more iterations than estimated
    assert step > math.ceil(budget / rollout)
    assert budget <= algo.env_steps < budget + rollout


def test_update_repeats_take_that_many_gradient_updates_per_step(tmp_path: Path) -> None:
    dataset = bandit(tmp_path)

    def trained(steps: int, **extra: Any):
        torch.manual_seed(0)
        algo = ALGOS["cql"].build(make_ctx(dataset, "cql", tmp_path, hidden=8, target_period=2, **extra))
        run(algo, steps)
        return algo

    once, repeated = trained(6), trained(2, update_repeats=3)  # the same 6 gradient updates and batches
    assert repeated.scheduler.last_epoch == once.scheduler.last_epoch == 6
    for a, b in zip(once.q_target.parameters(), repeated.q_target.parameters(), strict=True):
        torch.testing.assert_close(a, b)
