"""The teacher's network, chosen by ``algo.teacher`` (the ``teacher`` and ``ours`` methods share it).

- ``concat`` (the paper's): one decision transformer over each timestep's concatenated
  (R^{1:n}, o^{1:n}, a^{1:n}), n per-agent MLP heads; its size grows with n and it runs one team size.
- ``factored``: one token per (timestep, agent), causal attention over time and full attention over the
  agents of a step, every weight shared across agents (``marlkd.models.factored_teacher``); its size does
  not depend on n, permuting the agents permutes its outputs, and one checkpoint runs teams of other sizes
  where the observation size allows (:func:`team_policy`). It can also train on several datasets of
  different team sizes at once (``teacher_data``: their episodes pooled, teams padded to the largest,
  :mod:`marlkd.data.teams`), and it hides agents that do not act (dead units, padding) from its attention
  and its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from marlkd.algos._dt import ARCHITECTURE_FIELDS, DTLearner, DTModelConfig, DTPolicy
from marlkd.config import check
from marlkd.data.format import OfflineDataset, load_dataset
from marlkd.data.teams import TeamPool, pool_teams
from marlkd.errors import ConfigError
from marlkd.models.factored_teacher import FactoredConfig, FactoredTeacher
from marlkd.models.layouts import Layout

Teacher = Literal["concat", "factored"]
TEACHERS: tuple[str, ...] = get_args(Teacher)


@dataclass(frozen=True)
class TeacherModelConfig(DTModelConfig):
    """The decision-transformer fields plus the teacher's architecture.

    Attributes:
        teacher: ``concat`` (the paper's concatenation teacher) or ``factored`` (time x agent attention,
            parameters independent of the number of agents).
        agent_ids: factored only: size of its agent-id embedding table (0: none, for teams of exchangeable
            agents; otherwise at least the number of agents).
        teacher_data: factored only: more dataset files the teacher trains on besides the run's own
            (--data), of other team sizes (or more data of the same); their episodes are pooled with the
            run's, every team padded to the largest with absent agents. One agent's observation and action
            sizes must be the same in all. The run's own dataset alone gives the students (their team and
            their distillation data) and the evaluation. Paths are read as given (relative to the working
            directory).
    """

    teacher: Teacher = "concat"
    agent_ids: int = 0
    teacher_data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.teacher in TEACHERS, "algo.teacher", f"must be one of {TEACHERS}, got {self.teacher!r}")
        check(self.agent_ids >= 0, "algo.agent_ids", f"must be >= 0, got {self.agent_ids}")
        check(
            self.agent_ids == 0 or self.teacher == "factored",
            "algo.agent_ids",
            f"applies to the factored teacher only (algo.teacher is {self.teacher!r})",
        )
        check(
            not self.teacher_data or self.teacher == "factored",
            "algo.teacher_data",
            "only the factored teacher trains on several datasets (its parameters do not depend on the "
            f"team size); algo.teacher is {self.teacher!r}",
        )
        check(
            all(isinstance(path, str) and path.strip() for path in self.teacher_data),
            "algo.teacher_data",
            f"must be dataset file paths, got {self.teacher_data!r}",
        )


def factored_config(
    cfg: TeacherModelConfig, obs_dim: int, n_actions: int, max_timestep: int
) -> FactoredConfig:
    """The factored teacher's sizes: the run's model fields and the environment's per-agent sizes."""
    return FactoredConfig(
        obs_dim=obs_dim,
        n_actions=n_actions,
        head_hidden=cfg.head_hidden,
        max_timestep=max_timestep,
        agent_ids=cfg.agent_ids,
        **{name: getattr(cfg, name) for name in ARCHITECTURE_FIELDS},
    )


def teacher_training_data(ctx, cfg: TeacherModelConfig) -> OfflineDataset | TeamPool:
    """What the teacher trains on: ``ctx.dataset``, or with ``cfg.teacher_data`` the pool of it and those
    files (:func:`marlkd.data.teams.pool_teams`; a clear error for a missing file or other sizes)."""
    if not cfg.teacher_data:
        return ctx.dataset
    own = ctx.dataset.path if ctx.dataset.path is not None else "the run's dataset (--data)"
    datasets = [(str(own), ctx.dataset)]
    datasets += [(path, load_dataset(path)) for path in cfg.teacher_data]
    return pool_teams(datasets)


def build_teacher(ctx, cfg: TeacherModelConfig) -> DTLearner:
    """The teacher learner for ``cfg.teacher`` on ``ctx.dataset`` (and ``cfg.teacher_data``); its policy
    acts for ``ctx.dataset``'s team."""
    if cfg.teacher == "concat":
        return DTLearner(ctx, Layout.CENTRALIZED, cfg, mlp_heads=True)
    data = teacher_training_data(ctx, cfg)
    if 0 < cfg.agent_ids < data.n_agents:
        raise ConfigError(
            f"config field algo.agent_ids: {cfg.agent_ids} agent ids for a dataset of {data.n_agents} agents"
        )
    model = FactoredTeacher(factored_config(cfg, data.obs_dim, data.n_actions, data.max_steps + 1))
    return DTLearner(ctx, Layout.FACTORED, cfg, model=model, train_data=data)


def team_policy(
    learner: DTLearner, n_agents: int, target_return: float | np.ndarray | None = None
) -> DTPolicy:
    """The factored teacher's (centralized) policy for a team of ``n_agents``, which may differ from the
    training data's; ``target_return``: per-agent target return-to-go (None: the mean over agents of the
    training data's best episode returns)."""
    if learner.layout != Layout.FACTORED:
        raise ConfigError(
            "only the factored teacher (algo.teacher = 'factored') runs teams of another size; "
            f"this one is {learner.layout.value!r}"
        )
    agent_ids = learner.model.cfg.agent_ids
    if 0 < agent_ids < n_agents:
        raise ConfigError(f"the teacher has {agent_ids} agent-id embeddings, too few for {n_agents} agents")
    target = float(np.mean(learner.target_return)) if target_return is None else target_return
    return DTPolicy(
        learner.model,
        Layout.FACTORED,
        n_agents,
        learner.n_actions,
        learner.cfg.context,
        learner.return_scale,
        np.broadcast_to(np.asarray(target, np.float32), (n_agents,)).copy(),
        learner.ctx.device,
        learner.ctx.autocast_dtype,
    )
