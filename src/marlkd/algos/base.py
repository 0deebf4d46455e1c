"""What an algorithm is to the rest of marlkd: a small protocol, a registry entry, and a build context.

An algorithm file (``marlkd/algos/<name>.py``) holds only what is its own: its config dataclass, its
networks (built from ``marlkd.models``), its loss and its update. Sampling, the training loop,
checkpointing, logging and evaluation are shared (``marlkd.data``, ``marlkd.train``, ``marlkd.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from marlkd.config import TrainConfig
from marlkd.models.agent_nets import ObservationWindow
from marlkd.models.layouts import masked_logits

if TYPE_CHECKING:
    from marlkd.data.format import OfflineDataset


@runtime_checkable
class Policy(Protocol):
    """A decentralized team policy acting in a batched environment (B copies, N agents).

    ``reset`` starts B episodes; ``act`` maps each agent's own observation (and its own history, which
    the policy keeps) to an action; ``observe`` feeds back the rewards of the step just taken (sequence
    models decrement their return-to-go with it). Agent i's action may depend only on agent i's data.
    """

    def reset(self, num_envs: int) -> None: ...

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        """obs ``(B, N, O)`` float32, action_mask ``(B, N, A)`` bool or None -> actions ``(B, N)`` int64."""
        ...

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """rewards ``(B, N)`` of the last step; done ``(B, N)`` bool."""
        ...


@runtime_checkable
class ReturnConditioned(Protocol):
    """A policy conditioned on a per-agent target return ``(N,)`` that evaluation may set in place."""

    target_return: np.ndarray


@runtime_checkable
class Algorithm(Protocol):
    """A trainable method: everything the training loop (``marlkd.training``) uses of it.

    :class:`BaseAlgorithm` gives the defaults of everything but ``update``, ``policy``, ``state_dict`` and
    ``load_state_dict``.

    Attributes:
        num_updates: updates the run takes in all (``train.steps``; ``ours`` adds its teacher's; the
            adversarial methods derive it from their environment-step budget). Read after a resume.
        env_steps: environment steps the method itself has taken (0 for offline methods).
        return_scale: what returns-to-go are divided by (sequence models), recorded in results.json;
            None for methods without one.
    """

    num_updates: int
    env_steps: int
    return_scale: float | None

    def update(self, step: int) -> dict[str, float]:
        """Sample a batch and take one optimisation step; returns the metrics to log."""
        ...

    def policy(self) -> Policy:
        """The deployable (decentralized) policy."""
        ...

    def extra_policies(self) -> dict[str, Policy]:
        """Diagnostic policies evaluated beside the deployable one, by name (ours: its teacher)."""
        ...

    def policy_network(self) -> nn.Module | None:
        """The decentralized policy network online finetuning trains as a PPO actor, when the method has
        one that maps ``obs (M, N, O)`` to logits ``(M, N, A)``; None otherwise."""
        ...

    def summary(self) -> dict[str, Any]:
        """What the method adds to results.json at the end of a run (ours: its last diagnostics)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BaseAlgorithm:
    """The defaults of :class:`Algorithm`: ``train.steps`` updates, no environment steps, no return
    scale, no extra policies, no policy network. A method calls ``super().__init__(ctx)`` first."""

    return_scale: float | None = None

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self.num_updates = ctx.train.steps
        self.env_steps = 0

    def extra_policies(self) -> dict[str, Policy]:
        return {}

    def policy_network(self) -> nn.Module | None:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


@dataclass
class BuildContext:
    """Everything an algorithm's ``build`` receives.

    Attributes:
        dataset: the offline dataset (``marlkd.data.OfflineDataset``), already cut to
            ``train.num_trajectories`` episodes when that is set.
        config: the algorithm's own config dataclass instance.
        train: the shared :class:`marlkd.config.TrainConfig`.
        device: torch device to train on.
        autocast_dtype: ``torch.bfloat16`` when training in bf16 autocast, else ``None``.
        run_dir: the run directory (an algorithm may keep caches there, e.g. teacher outputs).
        seed: the run's seed.
    """

    dataset: OfflineDataset
    config: Any
    train: TrainConfig
    device: torch.device
    autocast_dtype: torch.dtype | None
    run_dir: Path
    seed: int


@dataclass(frozen=True)
class AlgoEntry:
    """A registered method: its config class and its builder, and how reports name it (``display_name``;
    the built-in methods' are in :data:`marlkd.names.METHOD_NAMES`, another method's defaults to its
    ``name``)."""

    name: str
    config_cls: type
    build: Callable[[BuildContext], Algorithm]
    description: str = ""
    # Environment steps the method itself takes while training (adversarial imitation, finetuning);
    # purely offline methods take none.
    interacts: bool = False
    display_name: str = ""

    def __post_init__(self) -> None:
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)


def checkpoint_state(parts: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
    """An algorithm's ``state_dict``: each named part's ``state_dict()`` (networks, optimizers, schedulers),
    in the order given, then the sampling ``generator``'s state under ``"generator"``."""
    state = {name: part.state_dict() for name, part in parts.items()}
    state["generator"] = generator.get_state()
    return state


def load_checkpoint_state(parts: dict[str, Any], generator: torch.Generator, state: dict[str, Any]) -> None:
    """The inverse of :func:`checkpoint_state`: load each named part, then the generator, in place."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    generator.set_state(state["generator"])


class GreedyPolicy:
    """A decentralized policy: each agent takes the best available action of its own scores.

    ``scores(obs (B, N, K * O), action_mask (B, N, A) bool) -> (B, N, A)`` gives per-agent logits or
    Q-values (a filtered Q for BCQ) from each agent's last ``history`` = K observations (K = 1: the current
    one); agent i's row may depend only on its own observations. Actions are the argmax
    over available actions (the :class:`Policy` protocol); the MLP baselines act with it.
    """

    def __init__(
        self,
        scores: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        modules: list[nn.Module],
        device: torch.device,
        history: int = 1,
    ) -> None:
        self.scores, self.modules, self.device = scores, modules, device
        self.window = ObservationWindow(history)

    def reset(self, num_envs: int) -> None:
        """Forget the observation window (a memoryless policy, ``history == 1``, has nothing to forget)."""
        self.window.reset()

    @torch.no_grad()
    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        for module in self.modules:
            module.eval()
        # copies: environments may hand out read-only arrays (SMAX's zero-copy views of JAX buffers)
        obs_t = self.window.push(torch.tensor(obs, dtype=torch.float32, device=self.device))  # (B, N, K*O)
        mask = None if action_mask is None else torch.tensor(action_mask, device=self.device)
        scores = masked_logits(self.scores(obs_t, mask).float(), mask)  # (B, N, A)
        return scores.argmax(-1).cpu().numpy().astype(np.int64)

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """Rewards are not used."""
