"""Online finetuning: MAPPO started from a trained method's decentralized policy, against MAPPO from scratch.

The pretrained policy's own network becomes the MAPPO actor and PPO trains it further (the critic is new):

- decision-transformer methods (``ours``'s students, ``idt``, ``madt``): :class:`DTActor` wraps the model
  as a sequence actor of :mod:`marlkd.ppo`; at every decision it reads each agent's last K steps
  (observations, earlier actions, timesteps) and the return-to-go, the target return minus the reward the
  agent received so far, exactly as the method's evaluation policy does;
- MLP policies (``bc``, ``icq``'s actors, ``gail``/``airl``'s MAPPO actor): the network itself.

Both runs use the same environment-step budget and PPO settings except the actor learning rate: MAPPO
from scratch runs at MAPPO's standard rate (``scratch_lr``) with the
built-in shared actor. :func:`finetune` writes ``pretrained/`` and ``scratch/`` (PPO run directories),
``learning_curves.csv`` (init, iteration, env_steps, mean_return), ``learning_curves.png`` (both curves)
and ``results.json`` (each run's final training return and a greedy evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from marlkd import atomic
from marlkd.algos._dt import DTPolicy
from marlkd.algos.base import Algorithm
from marlkd.config import EvalConfig, check, from_dict
from marlkd.data.windows import Window
from marlkd.errors import ConfigError
from marlkd.evaluate import evaluate
from marlkd.models.decision_transformer import DecisionTransformer
from marlkd.models.layouts import Layout, per_agent_logits, to_inputs
from marlkd.names import SCRATCH
from marlkd.optim import autocast
from marlkd.ppo import (
    History,
    MAPPOSettings,
    PPOPolicy,
    PPOResult,
    load_ppo_policy,
    train_ppo,
)
from marlkd.run_config import RunConfig
from marlkd.threads import apply_threads
from marlkd.training import load_run, resolve_device, train

RESULTS = "results.json"


@dataclass(frozen=True)
class FinetuneConfig(MAPPOSettings):
    """MAPPO settings of a finetuning comparison (the same for the pretrained and the scratch run): those of
    ``MAPPOSettings`` (``hidden`` sizes the critic and the scratch actor) with a smaller actor ``lr`` for the
    pretrained run and MAPPO's standard one for the scratch run.

    Attributes:
        lr: actor learning rate of the pretrained run (a trained network is finetuned gently).
        scratch_lr: actor learning rate of the run from scratch: MAPPO's standard 5e-4 (Yu et al., 2022),
            so the scratch baseline is not slowed down by the finetuning rate.
        eval_episodes: greedy evaluation episodes of each final policy (0: none).
        seed: seeds PPO (initialisation of new networks, sampling, environment resets).
    """

    SECTION: ClassVar[str] = "finetune"

    lr: float = 1e-4
    scratch_lr: float = 5e-4
    eval_episodes: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.eval_episodes >= 0, "finetune.eval_episodes", f"must be >= 0, got {self.eval_episodes}")
        check(self.scratch_lr > 0, "finetune.scratch_lr", f"must be > 0, got {self.scratch_lr}")
        super().__post_init__()


class DTActor(nn.Module):
    """A decision transformer as a PPO sequence actor: :class:`History` -> logits ``(M, N, A)``.

    The return-to-go at each step is ``(target_return - reward received before it) / return_scale`` per
    agent, as in :class:`marlkd.algos._dt.DTPolicy`, and the model runs under the same autocast
    precision as that policy (bf16 where the run trained in bf16). Dropout stays off in training mode too:
    PPO's probability ratio must compare one function at collection and at update.
    """

    def __init__(self, policy: DTPolicy) -> None:
        super().__init__()
        if policy.layout == Layout.CENTRALIZED:
            raise ConfigError("the centralized teacher is not a decentralized policy; finetune its students")
        self.model: DecisionTransformer = policy.model
        self.layout, self.n_agents, self.n_actions = policy.layout, policy.n_agents, policy.n_actions
        self.history_len = policy.context
        self.return_scale, self.autocast_dtype = policy.return_scale, policy.autocast_dtype
        self.register_buffer("target_return", torch.as_tensor(policy.target_return, dtype=torch.float32))

    def train(self, mode: bool = True) -> DTActor:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, history: History) -> torch.Tensor:
        returns = (self.target_return - history.reward_to_date) / self.return_scale  # (M, K, N)
        returns = returns.masked_fill(~history.mask[..., None], 0.0)
        window = Window(
            returns,
            history.obs,
            history.actions,
            history.timesteps,
            history.mask,
            None,
            torch.zeros(history.mask.shape[0], dtype=torch.int64, device=history.mask.device),
            history.timesteps,
        )
        inputs = to_inputs(window, self.layout, self.n_actions)
        with autocast(history.obs.device, self.autocast_dtype):
            logits, _ = self.model(inputs.returns, inputs.obs, inputs.actions, inputs.timesteps, inputs.mask)
        return per_agent_logits(logits.float(), self.layout, self.n_agents)[:, -1]  # (M, N, A)

    def policy(self, device: torch.device) -> DTPolicy:
        """The greedy decentralized policy of the (finetuned) model."""
        return DTPolicy(
            self.model,
            self.layout,
            self.n_agents,
            self.n_actions,
            self.history_len,
            self.return_scale,
            self.target_return.cpu().numpy(),
            device,
            self.autocast_dtype,
        )


def pretrained_actor(algo: Algorithm, method: str) -> nn.Module:
    """The trained decentralized policy network of ``algo`` as a PPO actor (see the module docstring)."""
    network = algo.policy_network()
    if network is not None:
        if getattr(getattr(algo, "cfg", None), "history", 1) > 1:
            raise ConfigError(
                f"method {method!r} was trained on observation windows (algo.history > 1); finetuning takes "
                "an MLP policy on the current observation (history 1) or a decision transformer"
            )
        return network
    policy = algo.policy()
    if isinstance(policy, DTPolicy):
        return DTActor(policy)
    raise ConfigError(
        f"method {method!r} has no policy network to finetune (its policy acts greedily on Q-values); "
        "finetune ours, idt, madt, bc, icq, gail or airl"
    )


def final_policy(actor: nn.Module, device: torch.device, seed: int):
    """The greedy evaluation policy of a trained actor."""
    if isinstance(actor, DTActor):
        return actor.policy(device)
    return PPOPolicy(actor, deterministic=True, seed=seed, device=device.type)


def run_mappo(
    env_id: str,
    env_kwargs: dict[str, Any],
    config: FinetuneConfig,
    out_dir: Path,
    actor: nn.Module | None,
    device: torch.device,
    progress: bool = True,
    eval_seed: int = EvalConfig.seed,
) -> tuple[PPOResult, dict[str, float]]:
    """MAPPO for ``config.env_steps`` from ``actor`` (None: the built-in shared actor, from scratch).

    Returns the PPO result and the summary of a greedy evaluation of the final policy on the evaluation
    episodes of seed ``eval_seed`` (empty when ``config.eval_episodes`` is 0).
    """
    ppo_config = config.ppo_config(config.seed, device.type)
    if actor is None:  # from scratch: MAPPO's own learning rate
        ppo_config = dataclasses.replace(ppo_config, lr=config.scratch_lr)
    result = train_ppo(env_id, ppo_config, out_dir, env_kwargs, progress=progress, actor=actor)
    evaluation: dict[str, float] = {}
    if config.eval_episodes > 0:
        if actor is None:
            policy = load_ppo_policy(
                result.checkpoint, deterministic=True, seed=config.seed, device=device.type
            )
        else:
            policy = final_policy(actor, device, config.seed)
        evaluation = evaluate(policy, env_id, env_kwargs, config.eval_episodes, eval_seed).summary()
    return result, evaluation


def write_curves(
    curves: dict[str, list[tuple[int, float]]], csv_path: Path, png_path: Path, title: str
) -> None:
    """Both learning curves: ``init, iteration, env_steps, mean_return`` rows and one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["init", "iteration", "env_steps", "mean_return"])
        for init, curve in curves.items():
            for iteration, (steps, value) in enumerate(curve, start=1):
                writer.writerow([init, iteration, steps, f"{value:.6g}"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for init, curve in curves.items():
        ax.plot([s for s, _ in curve], [r for _, r in curve], label=init)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean per-agent episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def finetune(
    run_dir: str | Path,
    config: FinetuneConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """MAPPO from the trained policy of ``run_dir`` and MAPPO from scratch, on the run's environment.

    Writes into ``out`` (default ``run_dir/finetune``) what the module docstring lists and returns the
    content of its ``results.json``; a finished comparison is returned without being redone.
    """

    apply_threads()
    config = config or FinetuneConfig()
    run_dir = Path(run_dir)
    out_dir = Path(out) if out is not None else run_dir / "finetune"
    if (out_dir / RESULTS).exists():
        return json.loads((out_dir / RESULTS).read_text())
    run_config, algo, dataset = load_run(run_dir)
    device = resolve_device(run_config.train.device)
    actor = pretrained_actor(algo, run_config.method)
    env_id, env_kwargs = dataset.metadata.env_id, dict(dataset.metadata.env_kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for init, start in ((run_config.method, actor), (SCRATCH, None)):
        result, evaluation = run_mappo(
            env_id,
            env_kwargs,
            config,
            out_dir / ("pretrained" if start is not None else SCRATCH),
            start,
            device,
            progress,
        )
        curves[init] = result.curve
        runs[init] = {
            "env_steps": result.env_steps,
            "iterations": result.iterations,
            "final_train_return": result.final_return,
            "wall_time_s": result.wall_time_s,
            **evaluation,
        }
    write_curves(
        curves,
        out_dir / "learning_curves.csv",
        out_dir / "learning_curves.png",
        f"MAPPO on {env_id}: from {run_config.method} vs from scratch",
    )
    results = {
        "run_dir": str(run_dir),
        "method": run_config.method,
        "env_id": env_id,
        "config": asdict(config),
        "runs": runs,
    }
    atomic.write_json(out_dir / RESULTS, results)
    return results


def run_experiment(run: Any, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
    """The run function of ``finetune`` sweeps (``marlkd.experiments``): one curve per run.

    ``run.config`` holds ``init`` (an offline method, or ``scratch``), ``pretrain`` (that method's
    RunConfig dict without ``data``/``out``), ``finetune`` (:class:`FinetuneConfig` fields), ``env``,
    ``env_kwargs``, ``seed`` and ``eval``. The offline method is trained in ``run_dir/pretrain`` on
    ``dataset``, then finetuned with MAPPO in ``run_dir/mappo``.
    """
    results_path = Path(run_dir) / RESULTS
    if results_path.exists():
        return json.loads(results_path.read_text())
    spec = run.config
    settings = {**spec.get("finetune", {}), "seed": spec["seed"]}
    eval_config = from_dict(EvalConfig, spec.get("eval", {}), where="eval")
    settings.setdefault("eval_episodes", eval_config.episodes)
    config = from_dict(FinetuneConfig, settings, where="finetune")
    env_id, env_kwargs = spec["env"], dict(spec.get("env_kwargs", {}))
    actor, device, pretrain_results = None, torch.device("cpu"), {}
    if spec["init"] != SCRATCH:
        if dataset is None:
            raise ConfigError(f"run {run.run_id}: pretraining {spec['init']!r} needs a dataset")
        pretrain = RunConfig.from_dict(
            {**spec["pretrain"], "data": str(dataset), "out": str(run_dir / "pretrain")}
        )
        pretrain_results = train(pretrain, progress=False)
        _, algo, data = load_run(run_dir / "pretrain")
        actor = pretrained_actor(algo, spec["init"])
        device = resolve_device(pretrain.train.device)
        env_id, env_kwargs = data.metadata.env_id, dict(data.metadata.env_kwargs)
    result, evaluation = run_mappo(
        env_id, env_kwargs, config, run_dir / "mappo", actor, device, False, eval_config.seed
    )
    results: dict[str, Any] = {
        "method": spec["init"],
        "env_id": env_id,
        "env_steps": result.env_steps,
        "final_train_return": result.final_return,
        "wall_time_s": result.wall_time_s,
        **evaluation,
    }
    if pretrain_results:
        results["pretrain_return_mean"] = pretrain_results.get("return_mean", float("nan"))
    results["curve"] = [
        {"step": i, "env_steps": steps, "metric": "return_mean", "value": value}
        for i, (steps, value) in enumerate(result.curve, start=1)
    ]
    atomic.write_json(results_path, results)
    return results


__all__ = ["DTActor", "FinetuneConfig", "finetune", "pretrained_actor", "run_experiment", "write_curves"]
