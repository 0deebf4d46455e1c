"""PPO for multi-agent teams over a batched environment: a centralized expert, or MAPPO.

One rollout is one episode in each of ``num_envs`` environment copies (``spec.max_steps`` steps at most);
advantages come from GAE on per-agent rewards; the update is the clipped surrogate with an entropy bonus
and a squared-error value loss, over a few epochs of minibatches. Two agent layouts (``PPOConfig.mode``):

- ``centralized``: one actor reads the joint observation (all agents' observations concatenated) and has
  one action head per agent; the critic reads the joint observation too. This is the paper's expert for
  the native environments and Highway. It is not a decentralized policy: agent i's action depends on the
  others' observations.
- ``mappo``: one actor with shared weights reads each agent's own observation plus its one-hot agent id
  (decentralized execution); the critic is centralized: it reads the global state when the environment has
  one, else the joint observation.

In both modes the critic has one value output per agent and each agent's advantage comes from its own
reward (``advantage="per_agent"``, the default: on shared-reward tasks this is the team reward, and on
tasks with individual rewards such as Grid-World it credits each agent with what it earned), or from the
team's summed reward (``advantage="team"``). The probability ratio is clipped per agent, as in MAPPO.
Unavailable actions (``BatchedEnv.action_mask``) get zero probability in both modes. The end of an
episode (termination or the time limit) is final: PPO optimises the finite-horizon episode return, which
is what evaluation measures.

Hooks for code that trains a policy with PPO (the API is :func:`train_ppo`):

- ``actor``: your own ``nn.Module`` mapping ``obs (M, N, O)`` to logits ``(M, N, A)`` (M any batch of
  timesteps), e.g. an online finetuning that starts from pretrained students; ``init_actor_state``
  loads a state dict into the actor (built-in or yours) before training.
- ``reward_fn(obs (M,N,O), actions (M,N), next_obs (M,N,O)) -> rewards (M,N)`` (NumPy in, array-like
  out) replaces the environment reward for learning, e.g. the discriminator reward of GAIL or AIRL. It is
  called once per rollout on all its steps. The learning curve keeps reporting the environment's return.
- ``callback(iteration: PPOIteration) -> bool | None`` runs after every update with that iteration's
  rollout (observations, actions, next observations, validity) and statistics; an adversarial imitation
  method updates its discriminator there. Returning True stops training.
- Sequence actors: an actor with an int attribute ``history_len`` K >= 1 (e.g. a pretrained decision
  transformer being finetuned) is called on a :class:`History` (each copy's last K steps: observations,
  earlier actions, the reward received so far, timesteps, mask) instead of the current observation, in the
  rollout and in the update alike; it returns the logits of the current step ``(M, N, A)``.

Outputs in ``out_dir``: ``checkpoint.pt`` (the latest; written atomically), ``checkpoints/step_*.pt``
(every ``checkpoint_every`` environment steps), ``learning_curve.csv`` (environment steps, mean
per-agent episode return, losses), ``learning_curve.png``, ``config.json`` and ``metrics.csv`` (the
same tidy ``step, wall_time_s, metric, value`` rows as every run, :mod:`marlkd.metrics_log`: per update,
``return/env``, ``env_steps`` and ``ppo/<loss>``). :func:`load_ppo_policy`
turns a checkpoint into a :class:`marlkd.algos.base.Policy`; its ``act_fn`` is the collection callback of
:func:`marlkd.data.collect.collect_episodes`.

Environment steps are counted per copy: one step of one environment copy (all its agents) is one step.

Modules: :mod:`~marlkd.ppo.config` (settings), :mod:`~marlkd.ppo.networks` (actors, critic, policy),
:mod:`~marlkd.ppo.rollout`, :mod:`~marlkd.ppo.update` (GAE, clipped surrogate, minibatch epochs) and
:mod:`~marlkd.ppo.trainer` (the loop, checkpoints, loading). The expert trainer (:mod:`marlkd.experts`),
online finetuning (:mod:`marlkd.finetune`) and adversarial imitation (GAIL, AIRL) are built on it; it is
not one of the offline methods of :mod:`marlkd.algos`.
"""

from __future__ import annotations

from marlkd.ppo.config import (
    ADVANTAGES,
    CRITIC_INPUTS,
    MODES,
    MAPPOSettings,
    PPOConfig,
)
from marlkd.ppo.networks import (
    CentralizedActor,
    Critic,
    PPOPolicy,
    RunningNorm,
    SharedActor,
    build_actor,
    sample_categorical,
)
from marlkd.ppo.rollout import (
    History,
    Rollout,
    collect_rollout,
    gather_history,
    history_len,
)
from marlkd.ppo.trainer import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Callback,
    PPOIteration,
    PPOResult,
    load_ppo_checkpoint,
    load_ppo_policy,
    plot_learning_curve,
    train_ppo,
)
from marlkd.ppo.update import (
    RewardFn,
    clipped_surrogate_loss,
    compute_gae,
    learning_rewards,
    ppo_update,
)

__all__ = [
    "ADVANTAGES",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CRITIC_INPUTS",
    "Callback",
    "CentralizedActor",
    "Critic",
    "History",
    "MAPPOSettings",
    "MODES",
    "PPOConfig",
    "PPOIteration",
    "PPOPolicy",
    "PPOResult",
    "RewardFn",
    "Rollout",
    "RunningNorm",
    "SharedActor",
    "build_actor",
    "clipped_surrogate_loss",
    "collect_rollout",
    "compute_gae",
    "gather_history",
    "history_len",
    "learning_rewards",
    "load_ppo_checkpoint",
    "load_ppo_policy",
    "plot_learning_curve",
    "ppo_update",
    "sample_categorical",
    "train_ppo",
]
