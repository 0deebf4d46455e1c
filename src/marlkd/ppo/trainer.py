"""The PPO training loop (:func:`train_ppo`), its checkpoints and learning curve, and loading a trained
policy back (:func:`load_ppo_policy`)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marlkd import atomic
from marlkd import checkpoint as ckpt
from marlkd.envs import EnvSpec, make_batched
from marlkd.errors import MarlkdError
from marlkd.metrics_log import MetricsLog
from marlkd.ppo.config import PPOConfig
from marlkd.ppo.networks import Critic, PPOPolicy, RunningNorm, build_actor
from marlkd.ppo.rollout import Rollout, collect_rollout
from marlkd.ppo.update import RewardFn, learning_rewards, ppo_update
from marlkd.progress import progress_bar
from marlkd.threads import apply_threads

CHECKPOINT_FORMAT = "marlkd-ppo"
CHECKPOINT_VERSION = 1


@dataclass
class PPOIteration:
    """What ``callback`` receives after each update."""

    iteration: int
    env_steps: int
    mean_return: float  # mean per-agent episode return of this rollout (environment reward)
    stats: dict[str, float]
    rollout: Rollout


@dataclass
class PPOResult:
    """What :func:`train_ppo` returns.

    ``curve`` holds ``(env_steps, mean per-agent episode return)`` per iteration; ``final_return`` is the
    mean of the last iterations' returns (a tenth of them, at least one).
    """

    out_dir: Path
    checkpoint: Path
    env_steps: int
    iterations: int
    final_return: float
    curve: list[tuple[int, float]]
    wall_time_s: float

    @classmethod
    def of(
        cls,
        out_dir: Path,
        checkpoint: Path,
        env_steps: int,
        iterations: int,
        curve: list[tuple[int, float]],
        wall_time_s: float,
    ) -> PPOResult:
        """The result of a finished training, ``final_return`` the mean of the curve's last tenth."""
        tail = [r for _, r in curve[-max(1, len(curve) // 10) :]]
        final_return = float(np.mean(tail)) if tail else float("nan")
        return cls(out_dir, checkpoint, env_steps, iterations, final_return, curve, wall_time_s)


Callback = Callable[[PPOIteration], "bool | None"]


def plot_learning_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Plot mean per-agent episode return against environment steps from ``learning_curve.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([int(r["env_steps"]) for r in rows], [float(r["mean_return"]) for r in rows])
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean per-agent episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.replacing(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


_CURVE_FIELDS = (
    "iteration",
    "env_steps",
    "mean_return",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_frac",
    "wall_time_s",
)


def train_ppo(
    env_id: str,
    config: PPOConfig,
    out_dir: str | Path,
    env_kwargs: dict[str, Any] | None = None,
    init_actor_state: dict[str, Any] | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    actor: nn.Module | None = None,
    reward_fn: RewardFn | None = None,
) -> PPOResult:
    """Train a team policy with PPO on ``env_id`` for ``config.total_steps`` environment steps.

    Args:
        env_id: a registered environment id; ``env_kwargs`` its constructor arguments.
        config: the hyperparameters (``config.mode`` picks centralized PPO or MAPPO).
        out_dir: receives ``checkpoint.pt``, ``checkpoints/``, ``learning_curve.csv/.png``, ``config.json``
            and ``metrics.csv`` (the tidy rows every run writes, :mod:`marlkd.metrics_log`; one step per
            update: ``return/env``, ``env_steps`` and ``ppo/<loss>``).
        init_actor_state: a state dict loaded into the actor before training (e.g. pretrained weights).
        progress: show a bar over environment steps (on a terminal; see marlkd.progress).
        callback: called after every update with a :class:`PPOIteration`; returning True stops training.
        actor: your own actor module (obs ``(M, N, O)`` -> logits ``(M, N, A)``) instead of the built-in
            one of ``config.mode``; :func:`load_ppo_policy` then needs it again to load the checkpoint.
        reward_fn: replaces the environment reward for learning (see the module docstring).

    Returns:
        A :class:`PPOResult` (checkpoint path, environment steps used, learning curve).
    """
    apply_threads()
    env_kwargs = dict(env_kwargs or {})
    out = Path(out_dir)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    seeds = np.random.default_rng(config.seed)
    env = make_batched(env_id, config.num_envs, **env_kwargs)
    nets = _Networks.build(config, env.spec, actor, init_actor_state)
    _write_config(out, env_id, env_kwargs, config)
    log = _CurveLog(out / "learning_curve.csv")
    metrics = MetricsLog(out, tensorboard=False)
    env_steps, iteration, keep = 0, 0, _KeepSchedule(config)
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()
    bar = progress_bar(progress, total=config.total_steps, unit="step", desc=f"ppo {env_id}")

    def save(mean_return: float, keep: bool) -> Path:
        state = nets.checkpoint(env_id, env_kwargs, env.spec, config, iteration, env_steps, mean_return)
        if keep:
            ckpt.save(state, out / "checkpoints" / f"step_{env_steps:010d}.pt")
        ckpt.save(state, out / "checkpoint.pt")
        return out / "checkpoint.pt"

    try:
        while env_steps < config.total_steps:
            nets.anneal(config, env_steps)
            rollout, stats = nets.iterate(env, config, int(seeds.integers(2**31 - 1)), generator, reward_fn)
            new_steps = int(rollout.valid.any(axis=-1).sum())
            env_steps += new_steps
            iteration += 1
            mean_return = float(rollout.episode_returns().mean())
            curve.append((env_steps, mean_return))
            elapsed = time.perf_counter() - start
            log.write(iteration, env_steps, mean_return, stats, elapsed)
            metrics.log(iteration, elapsed, _tidy(env_steps, mean_return, stats))
            bar.update(min(new_steps, config.total_steps - bar.n))
            bar.set_postfix(ret=f"{mean_return:.3f}")
            if keep.due(env_steps, iteration):
                save(mean_return, keep=True)
            if callback is not None and callback(
                PPOIteration(iteration, env_steps, mean_return, stats, rollout)
            ):
                break
    finally:
        bar.close()
        metrics.close()
    checkpoint = save(curve[-1][1] if curve else float("nan"), keep=keep.keeps_last)
    plot_learning_curve(log.path, out / "learning_curve.png", f"PPO ({config.mode}) on {env_id}")
    return PPOResult.of(out, checkpoint, env_steps, iteration, curve, time.perf_counter() - start)


def _write_config(out: Path, env_id: str, env_kwargs: dict[str, Any], config: PPOConfig) -> None:
    """``config.json``: the environment and the PPO configuration a run was trained with."""
    (out / "config.json").write_text(
        json.dumps({"env_id": env_id, "env_kwargs": env_kwargs, "ppo": dataclasses.asdict(config)}, indent=2)
        + "\n"
    )


class _KeepSchedule:
    """Which checkpoints go to ``checkpoints/``: one every ``checkpoint_every`` environment steps and, with
    ``checkpoint_growth`` > 1, those of iterations 1, 2, 3, ... spaced geometrically by that factor."""

    def __init__(self, config: PPOConfig) -> None:
        self.every, self.growth = config.checkpoint_every, config.checkpoint_growth
        self.next_steps, self.next_iteration = config.checkpoint_every, 1
        self.keeps_last = self.every > 0 or self.growth > 1

    def due(self, env_steps: int, iteration: int) -> bool:
        """Whether to keep the checkpoint after this iteration (and move on to the next one due)."""
        by_steps = bool(self.every) and env_steps >= self.next_steps
        by_iteration = self.growth > 1 and iteration >= self.next_iteration
        while by_steps and self.next_steps <= env_steps:
            self.next_steps += self.every
        if by_iteration:
            self.next_iteration = max(iteration + 1, math.ceil(self.next_iteration * self.growth))
        return by_steps or by_iteration


def _tidy(env_steps: int, mean_return: float, stats: dict[str, float]) -> dict[str, float]:
    """One update's ``metrics.csv`` rows, named as the adversarial methods' PPO rows are."""
    ppo = {f"ppo/{k}": v for k, v in stats.items()}
    return {"return/env": mean_return, "env_steps": float(env_steps), **ppo}


class _CurveLog:
    """``learning_curve.csv``: one row of :data:`_CURVE_FIELDS` per iteration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "w", newline="") as f:
            csv.writer(f).writerow(_CURVE_FIELDS)

    def write(
        self, iteration: int, env_steps: int, mean_return: float, stats: dict[str, float], wall_time: float
    ) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(
                [iteration, env_steps, mean_return] + [stats[k] for k in _CURVE_FIELDS[3:-1]] + [wall_time]
            )


@dataclass
class _Networks:
    """What PPO trains: the actor, the critic (and its value normalizer) and their optimizer."""

    actor: nn.Module
    critic: Critic
    value_norm: RunningNorm | None
    optimizer: torch.optim.Optimizer
    critic_kind: str
    device: torch.device
    builtin_actor: bool

    @classmethod
    def build(
        cls,
        config: PPOConfig,
        spec: EnvSpec,
        actor: nn.Module | None,
        init_actor_state: dict[str, Any] | None,
    ) -> _Networks:
        device = torch.device(config.device)
        critic_kind = config.resolved_critic_input(spec)
        critic_dim = spec.state_dim if critic_kind == "state" else spec.n_agents * spec.obs_dim
        builtin_actor = actor is None
        actor = (build_actor(config, spec) if actor is None else actor).to(device)
        if init_actor_state is not None:
            actor.load_state_dict(init_actor_state)
        critic = Critic(critic_dim, spec.n_agents, config.hidden).to(device)
        value_norm = RunningNorm().to(device) if config.value_norm else None
        optimizer = torch.optim.Adam(
            [
                {"params": actor.parameters(), "lr": config.lr},
                {"params": critic.parameters(), "lr": config.critic_lr},
            ],
            eps=1e-5,
        )
        return cls(actor, critic, value_norm, optimizer, critic_kind, device, builtin_actor)

    def anneal(self, config: PPOConfig, env_steps: int) -> None:
        """Decay both learning rates linearly to zero over the budget (with ``anneal_lr``)."""
        if config.anneal_lr:
            frac = 1.0 - env_steps / config.total_steps
            for group, lr in zip(self.optimizer.param_groups, (config.lr, config.critic_lr), strict=True):
                group["lr"] = lr * frac

    def iterate(
        self,
        env: Any,
        config: PPOConfig,
        seed: int,
        generator: torch.Generator,
        reward_fn: RewardFn | None,
    ) -> tuple[Rollout, dict[str, float]]:
        """One rollout, then one PPO update on it."""
        self.actor.eval()
        rollout = collect_rollout(
            env, self.actor, self.critic, self.value_norm, self.critic_kind, seed, generator, self.device
        )
        self.actor.train()
        rewards = learning_rewards(rollout, config, reward_fn)
        stats = ppo_update(
            rollout,
            rewards,
            self.actor,
            self.critic,
            self.value_norm,
            self.optimizer,
            config,
            generator,
            self.device,
        )
        return rollout, stats

    def checkpoint(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        spec: EnvSpec,
        config: PPOConfig,
        iteration: int,
        env_steps: int,
        mean_return: float,
    ) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "spec": dataclasses.asdict(spec),
            "config": dataclasses.asdict(config),
            "builtin_actor": self.builtin_actor,
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "value_norm": self.value_norm.state_dict() if self.value_norm is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "iteration": iteration,
            "env_steps": env_steps,
            "mean_return": mean_return,
        }


def load_ppo_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a PPO checkpoint (a file, or a run directory holding ``checkpoint.pt``) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise MarlkdError(f"no PPO checkpoint at {path}")
    state = ckpt.load(path, map_location="cpu", what="PPO checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise MarlkdError(f"{path} is not a marlkd PPO checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        version = state.get("version")
        raise MarlkdError(f"{path}: PPO checkpoint version {version}, expected {CHECKPOINT_VERSION}")
    return state


def load_ppo_policy(
    path: str | Path,
    deterministic: bool = False,
    seed: int = 0,
    actor: nn.Module | None = None,
    device: str = "cpu",
) -> PPOPolicy:
    """A :class:`PPOPolicy` from a checkpoint file or a run directory written by :func:`train_ppo`.

    ``actor`` must be given (un-trained, same architecture) when training used a custom actor.
    """
    state = load_ppo_checkpoint(path)
    if actor is None:
        if not state["builtin_actor"]:
            raise MarlkdError(f"{path}: trained with a custom actor; pass an actor module to load it into")
        actor = build_actor(PPOConfig(**state["config"]), EnvSpec(**state["spec"]))
    actor.load_state_dict(state["actor"])
    return PPOPolicy(actor.to(device), deterministic=deterministic, seed=seed, device=device)
