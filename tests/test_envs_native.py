"""The native environments: each rule on a hand-built situation, batched == single, PettingZoo's API tests."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from marlkd.envs import UnknownEnvironmentError, env_spec, make, make_batched
from marlkd.envs.equal_space import pair_distance_reward
from marlkd.envs.grid_world import resolve_moves
from marlkd.errors import ConfigError

NATIVE = ("fill-in", "equal-space", "grid-world", "grid-world-coop")
STAY, UP, DOWN, LEFT, RIGHT = range(5)


def _positions(obs: np.ndarray, grid_size: int) -> np.ndarray:
    """Grid cells ``(..., 2)`` (row, col) from the normalized position at the start of each observation."""
    return np.rint(obs[..., 0:2] * (grid_size - 1)).astype(np.int64)


def _move_towards(start: np.ndarray, goal: np.ndarray) -> int:
    """One grid action that brings ``start`` a step closer to ``goal`` (columns first)."""
    if goal[1] != start[1]:
        return RIGHT if goal[1] > start[1] else LEFT
    if goal[0] != start[0]:
        return DOWN if goal[0] > start[0] else UP
    return STAY


# ---------------------------------------------------------------------------------------------- Fill-In


def test_fill_in_reward_is_minus_the_empty_fraction_until_all_cells_are_filled() -> None:
    env = make_batched("fill-in", 1, grid_size=2, n_agents=1, window=3)
    obs = env.reset(seed=3)
    start = _positions(obs[0, 0], 2)
    _, reward, terminated, truncated = env.step(np.array([[STAY]]))
    assert reward[0, 0] == pytest.approx(-3 / 4)  # only the start cell is filled
    expected_rewards = [-2 / 4, -1 / 4, 0.0]
    # Visit the other three cells of the 2 x 2 grid: across, down or up, back across.
    row_move = DOWN if start[0] == 0 else UP
    col_move, col_back = (RIGHT, LEFT) if start[1] == 0 else (LEFT, RIGHT)
    for action, expected in zip((col_move, row_move, col_back), expected_rewards, strict=True):
        assert not terminated[0, 0]
        _, reward, terminated, truncated = env.step(np.array([[action]]))
        assert reward[0, 0] == pytest.approx(expected)
    assert terminated[0, 0] and not truncated[0, 0] and env.done()[0]


def test_fill_in_two_agents_on_one_new_cell_fill_it_once() -> None:
    env = make_batched("fill-in", 1, grid_size=3, n_agents=2)
    for seed in range(100):  # find agents two cells apart in a row, with the middle cell empty
        pos = _positions(env.reset(seed=seed)[0], 3)
        if pos[0, 0] == pos[1, 0] and abs(pos[0, 1] - pos[1, 1]) == 2:
            break
    first, second = (RIGHT, LEFT) if pos[0, 1] < pos[1, 1] else (LEFT, RIGHT)
    obs, reward, _, _ = env.step(np.array([[first, second]]))
    assert (_positions(obs[0], 3)[:, 1] == 1).all()  # fill-in has no collisions: both stand in the middle
    assert reward[0, 0] == reward[0, 1] == pytest.approx(-(9 - 3) / 9)


def test_fill_in_observation_layout_and_truncation() -> None:
    size, n_agents, steps, window = 6, 3, 3, 5
    env = make_batched("fill-in", 1, grid_size=size, n_agents=n_agents, max_steps=steps, window=window)
    obs = env.reset(seed=11)[0]  # (N, O)
    pos = _positions(obs, size)
    filled = np.zeros((size, size), dtype=bool)
    filled[pos[:, 0], pos[:, 1]] = True
    radius = window // 2
    for i in range(n_agents):
        expected_window = [
            1.0 if not (0 <= r < size and 0 <= c < size) else float(filled[r, c])  # outside counts as filled
            for r in range(pos[i, 0] - radius, pos[i, 0] + radius + 1)
            for c in range(pos[i, 1] - radius, pos[i, 1] + radius + 1)
        ]
        np.testing.assert_array_equal(obs[i, 2 : 2 + window**2], expected_window)
        others = [j for j in range(n_agents) if j != i]
        expected_relative = ((pos[others] - pos[i]) / (size - 1)).reshape(-1)
        np.testing.assert_allclose(obs[i, 2 + window**2 : -1], expected_relative, rtol=1e-6)
    assert (obs[:, -1] == 0).all()
    for t in range(1, steps + 1):
        obs, reward, terminated, truncated = env.step(np.zeros((1, n_agents), dtype=np.int64))
        np.testing.assert_allclose(reward, -(size * size - n_agents) / (size * size), rtol=1e-6)
        np.testing.assert_allclose(obs[0, :, -1], t / steps, rtol=1e-6)
        assert not terminated.any() and truncated.all() == (t == steps)
    state = env.state()[0]
    np.testing.assert_allclose(state[: 2 * n_agents], (pos / (size - 1)).reshape(-1), rtol=1e-6)
    np.testing.assert_array_equal(state[2 * n_agents : -1], filled.reshape(-1))
    assert state[-1] == 1.0


# ------------------------------------------------------------------------------------------ Equal Space


def test_pair_distance_reward_by_hand() -> None:
    positions = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]], dtype=np.float32)  # d = 1, 2, sqrt(5)
    expected = -(abs(1 - 1) + abs(2 - 1) + abs(math.sqrt(5) - 1)) / 3
    assert pair_distance_reward(positions, 1.0)[0] == pytest.approx(expected, rel=1e-6)
    assert pair_distance_reward(positions, 0.5)[0] == pytest.approx(-(0.5 + 1.5 + math.sqrt(5) - 0.5) / 3)


def test_equal_space_reward_uses_the_positions_after_the_step() -> None:
    env = make_batched("equal-space", 1)
    env.reset(seed=5)
    obs, reward, terminated, _ = env.step(np.zeros((1, 3), dtype=np.int64))  # at rest: nobody moves
    pos = obs[0, :, 0:2].astype(np.float64)
    pairs = list(itertools.combinations(range(3), 2))
    expected = -sum(abs(math.dist(pos[i], pos[j]) - 1.0) for i, j in pairs) / len(pairs)
    assert reward[0] == pytest.approx([expected] * 3, rel=1e-5)
    assert not terminated.any()
    np.testing.assert_allclose(obs[0, 0, 4:], (pos[[1, 2]] - pos[0]).reshape(-1), atol=1e-6)


def test_equal_space_dynamics_damping_speed_limit_and_walls() -> None:
    env = make_batched("equal-space", 1, n_agents=2, damping=0.25, force=5.0, mass=1.0, dt=0.1, max_speed=1.0)
    x0 = env.reset(seed=2)[0, 0, 0]
    push = 1 if x0 < 0 else 2  # towards the centre: +x or -x
    sign = 1.0 if push == 1 else -1.0
    speeds = []
    for _ in range(3):
        obs, *_ = env.step(np.array([[push, 0]]))
        speeds.append(sign * obs[0, 0, 2])
    # v1 = 5 * 0.1 = 0.5; v2 = 0.5 * 0.75 + 0.5 = 0.875; v3 = 0.875 * 0.75 + 0.5 = 1.156 -> clipped to 1.0
    assert speeds == pytest.approx([0.5, 0.875, 1.0], rel=1e-6)
    assert obs[0, 0, 0] == pytest.approx(x0 + sign * 0.1 * (0.5 + 0.875 + 1.0), abs=1e-6)
    assert obs[0, 0, 3] == 0.0 and obs[0, 1, 2:4].tolist() == [0.0, 0.0]

    walled = make_batched("equal-space", 1, n_agents=2, force=100.0, max_speed=50.0, max_steps=5)
    walled.reset(seed=0)
    for _ in range(3):
        obs, *_ = walled.step(np.array([[1, 0]]))  # +x far harder than the box allows
        assert obs[0, 0, 0] == 1.0 and obs[0, 0, 2] == 0.0  # clipped to the wall, velocity into it zeroed
    *_, truncated = walled.step(np.zeros((1, 2), dtype=np.int64))
    assert not truncated.any()
    _, _, terminated, truncated = walled.step(np.zeros((1, 2), dtype=np.int64))
    assert truncated.all() and not terminated.any()


# ------------------------------------------------------------------------------------------- Grid-World


def test_resolve_moves_collision_rule() -> None:
    # Cells on a line 0..9; each row is one copy with two agents (start cells, targets) -> expected cells.
    cases = [
        ((0, 2), (1, 1), (0, 2)),  # same target: both stay
        ((0, 1), (1, 0), (0, 1)),  # swap: both stay
        ((0, 1), (1, 1), (0, 1)),  # into a cell whose agent stays: the mover stays
        ((0, 1), (1, 2), (0, 2)),  # following an agent that moves away: the follower stays
        ((0, 5), (1, 6), (1, 6)),  # independent moves go through
    ]
    cells = np.array([case[0] for case in cases])
    targets = np.array([case[1] for case in cases])
    np.testing.assert_array_equal(resolve_moves(cells, targets), np.array([case[2] for case in cases]))


def _grid_world_scene(predicate, **kwargs) -> tuple:
    """Reset a one-copy Grid-World over seeds until ``predicate(pos, objects)`` is truthy.

    ``pos`` ``(N, 2)`` are the agents' cells, ``objects`` ``(N, H, W)`` each agent's uncollected objects.
    """
    env, pos, objects, _ = _grid_world_scene_and_seed(predicate, **kwargs)
    return env, pos, objects


def _grid_world_scene_and_seed(predicate, **kwargs) -> tuple:
    """:func:`_grid_world_scene`, also returning the seed of the scene."""
    env = make_batched("grid-world", 1, **kwargs)
    size = env.config.grid_size
    for seed in range(500):
        obs = env.reset(seed=seed)
        pos = _positions(obs[0], size)  # (N, 2)
        objects = env.state()[0, 2 * env.config.n_agents : -1].reshape(env.config.n_agents, size, size)
        if predicate(pos, objects):
            return env, pos, objects, seed
    raise AssertionError("no seed gives the wanted scene")


def _neighbour_with(pos: np.ndarray, grid: np.ndarray) -> tuple[int, np.ndarray] | None:
    for action, delta in ((UP, (-1, 0)), (DOWN, (1, 0)), (LEFT, (0, -1)), (RIGHT, (0, 1))):
        cell = pos + delta
        if (0 <= cell).all() and (cell < grid.shape[0]).all() and grid[cell[0], cell[1]]:
            return action, cell
    return None


def test_grid_world_collecting_an_own_object_rewards_only_the_collector() -> None:
    env, pos, objects = _grid_world_scene(lambda pos, objects: _neighbour_with(pos[0], objects[0]))
    action, cell = _neighbour_with(pos[0], objects[0])
    obs, reward, terminated, _ = env.step(np.array([[action, STAY]]))
    assert reward[0].tolist() == [1.0, 0.0]
    assert (_positions(obs[0, 0], 8) == cell).all()
    after = env.state()[0, 4:-1].reshape(2, 8, 8)
    assert not after[0, cell[0], cell[1]] and after[0].sum() == objects[0].sum() - 1
    assert not terminated.any()


def test_grid_world_other_agents_objects_are_not_collected() -> None:
    env, pos, objects = _grid_world_scene(lambda pos, objects: _neighbour_with(pos[0], objects[1]))
    action, cell = _neighbour_with(pos[0], objects[1])
    obs, reward, _, _ = env.step(np.array([[action, STAY]]))
    assert reward[0].tolist() == [0.0, 0.0]
    assert (_positions(obs[0, 0], 8) == cell).all()
    np.testing.assert_array_equal(env.state()[0, 4:-1].reshape(2, 8, 8), objects)


def test_grid_world_two_agents_entering_one_cell_both_stay() -> None:
    def two_apart_in_a_row(pos, objects):
        return pos[0, 0] == pos[1, 0] and abs(pos[0, 1] - pos[1, 1]) == 2

    env, pos, _ = _grid_world_scene(two_apart_in_a_row)
    first, second = (RIGHT, LEFT) if pos[0, 1] < pos[1, 1] else (LEFT, RIGHT)
    obs, reward, _, _ = env.step(np.array([[first, second]]))
    np.testing.assert_array_equal(_positions(obs[0], 8), pos)
    assert reward[0].tolist() == [0.0, 0.0]
    obs, _, _, _ = env.step(np.array([[first, STAY]]))  # alone, the same move goes through
    assert abs(_positions(obs[0, 0], 8)[1] - pos[1, 1]) == 1


def test_grid_world_terminates_when_all_objects_are_collected() -> None:
    env = make_batched("grid-world", 1, grid_size=3, n_agents=1, objects_per_agent=1, max_steps=10)
    env.reset(seed=4)
    total, steps = 0.0, 0
    while not env.done()[0]:
        state = env.state()[0]
        pos = np.rint(state[:2] * 2).astype(np.int64)
        goal = np.argwhere(state[2:-1].reshape(3, 3))[0]
        _, reward, terminated, truncated = env.step(np.array([[_move_towards(pos, goal)]]))
        total, steps = total + reward[0, 0], steps + 1
    assert total == 1.0 and terminated[0, 0] and not truncated[0, 0] and steps <= 4


@pytest.mark.parametrize("shared_objects", [False, True])
def test_grid_world_observation_windows_match_the_state(shared_objects: bool) -> None:
    size, window, n_agents = 8, 5, 2
    env = make_batched("grid-world", 4, shared_objects=shared_objects)
    rng = np.random.default_rng(0)
    obs = env.reset(seed=21)
    radius, area = window // 2, window**2
    channel_counts = np.zeros(3)
    for _ in range(8):
        channel_counts += obs[..., 2 : 2 + 3 * area].reshape(-1, 3).sum(axis=0)
        state = env.state()
        for b in range(env.num_envs):
            pos = _positions(obs[b], size)
            objects = state[b, 2 * n_agents : -1].reshape(n_agents, size, size)
            if shared_objects:  # the state holds every object in grid 0; each agent may collect them all
                assert not objects[1:].any()
                objects = np.repeat(objects[:1], n_agents, axis=0)
            for i in range(n_agents):
                expected = np.zeros((window, window, 3), dtype=np.float32)  # cell-major, channels last
                for dr, dc in itertools.product(range(window), repeat=2):
                    r, c = pos[i, 0] + dr - radius, pos[i, 1] + dc - radius
                    if not (0 <= r < size and 0 <= c < size):
                        continue  # outside the grid: zeros in every channel
                    expected[dr, dc, 0] = objects[i, r, c]
                    others = any(objects[j, r, c] for j in range(n_agents) if j != i)
                    expected[dr, dc, 1] = others and not shared_objects
                    expected[dr, dc, 2] = any((pos[j] == (r, c)).all() for j in range(n_agents) if j != i)
                np.testing.assert_array_equal(obs[b, i, 2 : 2 + 3 * area], expected.reshape(-1))
        obs, *_ = env.step(rng.integers(0, 5, size=(env.num_envs, n_agents)))
    assert (channel_counts[[0, 2]] > 0).all()  # every channel was exercised ...
    assert (channel_counts[1] == 0) == shared_objects  # ... except "other objects" with shared objects


def _owned_neighbour(pos, objects):
    """Agent 0 has a neighbouring cell holding an object of agent 1's type (as placed at reset)."""
    return _neighbour_with(pos[0], objects[1])


def test_grid_world_shared_objects_let_an_agent_collect_another_agents_object() -> None:
    env, pos, objects, seed = _grid_world_scene_and_seed(_owned_neighbour)
    action, cell = _neighbour_with(pos[0], objects[1])
    shared = make_batched("grid-world", 1, shared_objects=True)
    obs = shared.reset(seed=seed)  # the same placement: shared_objects changes no draw
    np.testing.assert_array_equal(_positions(obs[0], 8), pos)
    everything = objects.any(axis=0)
    np.testing.assert_array_equal(shared.state()[0, 4:-1].reshape(2, 8, 8)[0], everything)
    obs, reward, terminated, _ = shared.step(np.array([[action, STAY]]))
    assert reward[0].tolist() == [1.0, 0.0]  # to the collector alone: team_reward is off
    assert (_positions(obs[0, 0], 8) == cell).all()
    after = shared.state()[0, 4:-1].reshape(2, 8, 8)
    assert not after[0, cell[0], cell[1]] and after[0].sum() == everything.sum() - 1 and not after[1].any()
    assert not terminated.any()
    _, reward, _, _ = env.step(np.array([[action, STAY]]))  # the default rules: the object stays
    assert reward[0].tolist() == [0.0, 0.0]


def test_grid_world_team_reward_gives_every_agent_the_steps_total() -> None:
    env, pos, objects = _grid_world_scene(
        lambda pos, objects: _neighbour_with(pos[0], objects[0]), team_reward=True
    )
    action, _ = _neighbour_with(pos[0], objects[0])
    _, reward, _, _ = env.step(np.array([[action, STAY]]))
    assert reward[0].tolist() == [1.0, 1.0]  # agent 0's own object, credited to the team

    def both_next_to_an_object(pos, objects):
        first, second = _neighbour_with(pos[0], objects[0]), _neighbour_with(pos[1], objects[1])
        return first and second and not (first[1] == second[1]).all()

    env, pos, objects = _grid_world_scene(both_next_to_an_object, team_reward=True)
    actions = [_neighbour_with(pos[i], objects[i])[0] for i in range(2)]
    _, reward, _, _ = env.step(np.array([actions]))
    assert reward[0].tolist() == [2.0, 2.0]
    _, reward, _, _ = env.step(np.array([[STAY, STAY]]))
    assert reward[0].tolist() == [0.0, 0.0]


def test_grid_world_coop_collects_any_object_and_terminates_when_the_team_is_done() -> None:
    env = make_batched("grid-world-coop", 1, grid_size=3, objects_per_agent=1, max_steps=20)
    env.reset(seed=5)
    total = np.zeros(2)
    while not env.done()[0]:
        state = env.state()[0]
        pos = np.rint(state[:4].reshape(2, 2) * 2).astype(np.int64)
        goal = np.argwhere(state[4:-1].reshape(2, 3, 3)[0])[0]  # agent 0 fetches every object, 1 stays
        _, reward, terminated, truncated = env.step(np.array([[_move_towards(pos[0], goal), STAY]]))
        total += reward[0]
    assert total.tolist() == [2.0, 2.0] and terminated[0, 0] and not truncated[0, 0]


def test_grid_world_defaults_keep_their_records_and_rules() -> None:
    default = env_spec("grid-world")
    assert default.kwargs == {
        "grid_size": 8, "n_agents": 2, "objects_per_agent": 3, "max_steps": 30, "window": 5
    }  # fmt: skip
    assert env_spec("grid-world", shared_objects=False, team_reward=False).kwargs == default.kwargs
    assert env_spec("grid-world", team_reward=True).kwargs["team_reward"] is True
    coop = env_spec("grid-world-coop")
    assert coop.kwargs["shared_objects"] is True and coop.kwargs["team_reward"] is True
    # grid-world-coop is Grid-World with its arguments; explicit False is Grid-World itself.
    rng = np.random.default_rng(3)
    off = {"shared_objects": False, "team_reward": False}
    pairs = [
        (make_batched("grid-world", 8), make_batched("grid-world", 8, **off)),
        (make_batched("grid-world-coop", 8), make_batched("grid-world", 8, **coop.kwargs)),
    ]
    for first, second in pairs:
        np.testing.assert_array_equal(first.reset(seed=11), second.reset(seed=11))
        for _ in range(30):
            actions = rng.integers(0, 5, size=(8, 2))
            for a, b in zip(first.step(actions), second.step(actions), strict=True):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(first.state(), second.state())


def test_grid_world_coop_renders_objects_in_grey() -> None:
    grey = np.array([150, 150, 150], dtype=np.uint8)
    frames = {}
    for env_id in ("grid-world", "grid-world-coop"):
        env = make(env_id)
        env.reset(seed=0)
        frames[env_id] = env.render()
    has_grey = {k: bool((v.reshape(-1, 3) == grey).all(axis=1).any()) for k, v in frames.items()}
    assert has_grey == {"grid-world": False, "grid-world-coop": True}


# ------------------------------------------------------------------------------- every native environment


def _random_episode_check(env_id: str, num_envs: int, seed: int, episodes: int) -> None:
    """Copy b of a batched env reset with ``seed`` equals a single env reset with ``seed + b``, stepwise."""
    batched = make_batched(env_id, num_envs)
    singles = [make(env_id) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    n_agents = batched.spec.n_agents
    for episode in range(episodes):
        episode_seed = seed if episode == 0 else None  # later episodes: the next unseeded reset
        obs = batched.reset(seed=episode_seed)
        for b, single in enumerate(singles):
            single_obs, _ = single.reset(seed=None if episode_seed is None else seed + b)
            np.testing.assert_array_equal(np.stack(list(single_obs.values())), obs[b])
            np.testing.assert_array_equal(single.state(), batched.state()[b])
        while not batched.done().all():
            actions = rng.integers(0, batched.spec.n_actions, size=(num_envs, n_agents))
            running = [bool(single.agents) for single in singles]
            obs, rewards, terminated, truncated = batched.step(actions)
            for b, single in enumerate(singles):
                if not running[b]:
                    continue
                out = single.step({agent: actions[b, i] for i, agent in enumerate(single.possible_agents)})
                expected = (obs[b], rewards[b], terminated[b], truncated[b])
                for value, batched_value in zip(out[:4], expected, strict=True):
                    np.testing.assert_array_equal(np.stack(list(value.values())), batched_value)
                np.testing.assert_array_equal(single.state(), batched.state()[b])
        assert not any(single.agents for single in singles)


@pytest.mark.parametrize("env_id", NATIVE)
def test_batched_equals_single_over_random_episodes(env_id: str) -> None:
    _random_episode_check(env_id, num_envs=4, seed=100, episodes=2)


@pytest.mark.parametrize("env_id", NATIVE)
def test_pettingzoo_parallel_api(env_id: str) -> None:
    parallel_api_test(make(env_id), num_cycles=100)
    parallel_seed_test(lambda: make(env_id), num_cycles=100)


@pytest.mark.parametrize("env_id", NATIVE)
def test_spaces_spec_and_bounds(env_id: str) -> None:
    spec = env_spec(env_id)
    env = make(env_id)
    obs, _ = env.reset(seed=0)
    assert env.possible_agents == [f"agent_{i}" for i in range(spec.n_agents)]
    assert env.observation_space("agent_0").shape == (spec.obs_dim,)
    assert env.observation_space("agent_0").dtype == np.float32
    assert env.action_space("agent_0").n == spec.n_actions
    assert env.state().shape == (spec.state_dim,) and env.state().dtype == np.float32
    rng = np.random.default_rng(0)
    while env.agents:
        for agent, value in obs.items():
            assert value.dtype == np.float32 and env.observation_space(agent).contains(value), (agent, value)
        obs, *_ = env.step({agent: int(rng.integers(spec.n_actions)) for agent in env.agents})
    with pytest.raises(KeyError, match="unknown agent"):
        env.observation_space("agent_99")


@pytest.mark.parametrize("env_id", NATIVE)
def test_finished_copies_are_frozen(env_id: str) -> None:
    env = make_batched(env_id, 2, max_steps=2)
    env.reset(seed=0)
    actions = np.ones((2, env.spec.n_agents), dtype=np.int64)
    for _ in range(2):
        obs, *_ = env.step(actions)
    assert env.done().all()
    state = env.state()
    again, rewards, terminated, truncated = env.step(np.full_like(actions, -1))  # ignored: copies are done
    np.testing.assert_array_equal(again, obs)
    np.testing.assert_array_equal(env.state(), state)
    assert (rewards == 0).all() and (terminated | truncated).all()
    assert env.action_mask().shape == (2, env.spec.n_agents, env.spec.n_actions) and env.action_mask().all()


@pytest.mark.parametrize("env_id", NATIVE)
def test_seeding_is_reproducible(env_id: str) -> None:
    first, second = make_batched(env_id, 8), make_batched(env_id, 8)
    np.testing.assert_array_equal(first.reset(seed=7), second.reset(seed=7))
    np.testing.assert_array_equal(first.reset(), second.reset())  # the unseeded follow-up episode as well
    different = first.reset(seed=8)
    assert not np.array_equal(different, second.reset(seed=7))
    np.testing.assert_array_equal(different[:-1], second.reset(seed=7)[1:])  # copy b + 1 of 7 is copy b of 8


@pytest.mark.parametrize("env_id", NATIVE)
def test_render_returns_an_rgb_frame(env_id: str) -> None:
    env = make(env_id)
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 2  # background, lines and agents at least
    quiet = make(env_id, render_mode=None)
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None


@pytest.mark.parametrize("env_id", NATIVE)
def test_invalid_actions_raise(env_id: str) -> None:
    env = make_batched(env_id, 2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((3, env.spec.n_agents), dtype=np.int64))
    with pytest.raises(ValueError, match="must lie in"):
        env.step(np.full((2, env.spec.n_agents), env.spec.n_actions))


@pytest.mark.parametrize(
    ("env_id", "kwargs", "argument"),
    [
        ("fill-in", {"grid_size": 1}, "grid_size"),
        ("fill-in", {"window": 4}, "window"),
        ("fill-in", {"grid_size": 2, "n_agents": 5}, "n_agents"),
        ("fill-in", {"max_steps": 0}, "max_steps"),
        ("equal-space", {"n_agents": 1}, "n_agents"),
        ("equal-space", {"damping": 1.5}, "damping"),
        ("equal-space", {"dt": 0.0}, "dt"),
        ("equal-space", {"target_distance": float("nan")}, "target_distance"),
        ("grid-world", {"objects_per_agent": 0}, "objects_per_agent"),
        ("grid-world", {"grid_size": 2, "objects_per_agent": 2}, "objects_per_agent"),
        ("grid-world", {"n_agents": True}, "n_agents"),
        ("grid-world", {"colour": "red"}, "colour"),
        ("grid-world", {"shared_objects": 1}, "shared_objects"),
        ("grid-world", {"team_reward": "yes"}, "team_reward"),
        ("grid-world-coop", {"team_reward": None}, "team_reward"),
        ("grid-world-coop", {"window": 2}, "window"),
    ],
)
def test_invalid_arguments_raise_config_error_naming_them(env_id: str, kwargs: dict, argument: str) -> None:
    for build in (lambda: env_spec(env_id, **kwargs), lambda: make(env_id, **kwargs)):
        with pytest.raises(ConfigError, match=argument):
            build()
    with pytest.raises(ConfigError, match="render_mode"):
        make(env_id, render_mode="human")


def test_unknown_environment_id_lists_the_known_ones() -> None:
    with pytest.raises(UnknownEnvironmentError, match="unknown environment 'fil-in'.*fill-in.*grid-world"):
        make("fil-in")
