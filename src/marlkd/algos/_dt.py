"""Decision-transformer learners and policies shared by IDT, MADT, the teacher and the students.

:class:`DTLearner` is a decision transformer under one agent layout trained with the action loss;
:class:`DTPolicy` runs any such model decentralized (or, for the teacher, centralized) in a batched
environment, conditioned on a target return-to-go decremented by the rewards received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from marlkd.algos.base import BaseAlgorithm
from marlkd.config import check, check_dropouts
from marlkd.data.windows import Window, WindowSampler, dead_agents, default_return_scale
from marlkd.errors import DatasetError
from marlkd.models.decision_transformer import DecisionTransformer, DTConfig
from marlkd.models.layouts import Layout, masked_logits, model_input_sizes, per_agent_logits, to_inputs
from marlkd.optim import autocast, make_optimizer, optimizer_step

# The hyperparameters a method's config sets for its network; DTConfig holds them under the same names,
# beside the sizes that the dataset and the agent layout fix.
ARCHITECTURE_FIELDS = ("context", "width", "layers", "heads", "dropout", "attn_dropout")


@dataclass(frozen=True)
class DTModelConfig:
    """Decision-transformer settings of IDT, MADT, the teacher and the students (a method's config extends
    it): the network's hyperparameters, which :func:`build_model` copies into the model's
    :class:`~marlkd.models.decision_transformer.DTConfig` (:data:`ARCHITECTURE_FIELDS`, and ``head_hidden``
    for MLP heads) beside the sizes the dataset and the layout fix, and the learner's ``return_scale``.

    Attributes:
        context: K, timesteps per window.
        width: model width D.
        layers: transformer blocks.
        heads: attention heads.
        dropout: dropout probability.
        return_scale: returns-to-go are divided by this; None takes the dataset's largest absolute
            per-agent episode return (recorded in the run's checkpoint and results).
        head_hidden: hidden width of the teacher's per-agent MLP heads (its features f^i).
        attn_dropout: dropout on attention probabilities; None: ``dropout``. On a GPU, 0 lets PyTorch use
            its fused attention kernel.
    """

    context: int = 20
    width: int = 128
    layers: int = 3
    heads: int = 1
    dropout: float = 0.1
    return_scale: float | None = None
    head_hidden: int = 128
    attn_dropout: float | None = None

    def __post_init__(self) -> None:
        check(self.context >= 1, "algo.context", f"must be >= 1, got {self.context}")
        check(self.width >= 1 and self.width % self.heads == 0, "algo.width", "must be a multiple of heads")
        check(self.layers >= 1, "algo.layers", "must be >= 1")
        check(self.return_scale is None or self.return_scale > 0, "algo.return_scale", "must be > 0")
        check(self.head_hidden >= 1, "algo.head_hidden", "must be >= 1")
        check_dropouts("algo", self.dropout, self.attn_dropout)


def build_model(layout: Layout, dataset, cfg: DTModelConfig, mlp_heads: bool = False) -> DecisionTransformer:
    """A decision transformer sized for ``dataset`` under ``layout``."""
    sizes = model_input_sizes(layout, dataset.n_agents, dataset.obs_dim, dataset.n_actions)
    return DecisionTransformer(
        DTConfig(
            n_actions=dataset.n_actions,
            head_hidden=cfg.head_hidden if mlp_heads else 0,
            max_timestep=dataset.max_steps + 1,
            **{name: getattr(cfg, name) for name in ARCHITECTURE_FIELDS},
            **sizes,
        )
    )


def action_loss(logits: torch.Tensor, window: Window) -> torch.Tensor:
    """Cross-entropy of per-agent logits ``(B, K, N, A)`` to the dataset actions, averaged over valid steps
    and summed over agents (each agent's model gets the gradient of its own mean loss). Agents that do not
    act (``window.present`` False: padding, dead, finished) add nothing."""
    logits = masked_logits(logits.float(), window.action_mask)
    ce = F.cross_entropy(logits.flatten(0, 2), window.actions.flatten(), reduction="none")
    ce = ce.view(window.actions.shape)  # (B, K, N)
    if window.present is not None:
        ce = ce * window.present
    weight = window.mask.float()[..., None]
    return (ce * weight).sum() / weight.sum().clamp(min=1.0)


def acting_per_step(window: Window, n_agents: int) -> float:
    """The mean number of acting agents per valid step of ``window`` (``n_agents`` when all act): the
    divisor that turns :func:`action_loss` into a loss per agent."""
    if window.present is None:
        return float(n_agents)
    steps = window.mask.sum().clamp(min=1)
    return float((window.present & window.mask[..., None]).sum().clamp(min=1) / steps)


class DTLearner(BaseAlgorithm):
    """A decision transformer under one layout trained on the action loss (IDT, MADT, the teacher)."""

    def __init__(
        self,
        ctx,
        layout: Layout,
        cfg: DTModelConfig,
        mlp_heads: bool = False,
        model: torch.nn.Module | None = None,
        train_data=None,
    ) -> None:
        """``model``: a network that follows the decision transformer's call contract, built by the caller
        (the factored teacher); None builds a :class:`DecisionTransformer` for ``layout``. ``train_data``:
        what it trains on, when not ``ctx.dataset`` (the factored teacher's pool of teams,
        :class:`marlkd.data.teams.TeamPool`); its return scale comes from it, while its policy acts for
        ``ctx.dataset``'s team. Under the factored layout the windows carry which agents act."""
        super().__init__(ctx)
        self.layout, self.cfg = layout, cfg
        dataset = ctx.dataset
        self.train_data = dataset if train_data is None else train_data
        self.n_agents, self.n_actions = dataset.n_agents, dataset.n_actions
        self.return_scale = cfg.return_scale or default_return_scale(self.train_data)
        self.target_return = dataset.episode_returns().max(axis=0).astype(np.float32)  # (N,)
        self.sampler = WindowSampler(
            self.train_data, cfg.context, self.return_scale, ctx.device, presence=layout == Layout.FACTORED
        )
        self.model = (model if model is not None else build_model(layout, dataset, cfg, mlp_heads)).to(
            ctx.device
        )
        self.optimizer, self.scheduler = make_optimizer(
            self.model.optimizer_groups(ctx.train.weight_decay), ctx.train
        )
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def forward(self, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-agent logits ``(B, K, N, A)`` and the model's features ``(M, B', K, H, F)``."""
        inputs = to_inputs(window, self.layout, self.n_actions)
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            logits, features = self.model(*inputs.args(), **inputs.kwargs())
        return per_agent_logits(logits.float(), self.layout, self.n_agents), features

    def update(self, step: int) -> dict[str, float]:
        self.model.train()
        window = self.sampler.sample(self.ctx.train.batch_size, self.generator)
        logits, _ = self.forward(window)
        loss = action_loss(logits, window)
        grad_norm = optimizer_step(loss, self.optimizer, self.scheduler, self.ctx.train.grad_clip)
        # logged per (acting) agent, as every method logs it; the gradient uses the sum over agents
        return {"loss/action": loss.item() / acting_per_step(window, self.n_agents), "grad_norm": grad_norm}

    def policy(self) -> DTPolicy:
        return DTPolicy(
            self.model,
            self.layout,
            self.n_agents,
            self.n_actions,
            self.cfg.context,
            self.return_scale,
            self.target_return,
            self.ctx.device,
            self.ctx.autocast_dtype,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "return_scale": self.return_scale,
            "target_return": self.target_return,
            **({"train_sources": self.train_sources()} if self.train_sources() else {}),
        }

    def train_sources(self) -> list[list[str]]:
        """[name, checksum] of each dataset of a pooled training set (empty: it trains on ctx.dataset)."""
        return [[source.name, source.checksum] for source in getattr(self.train_data, "sources", ())]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, mine = state.get("train_sources", []), self.train_sources()
        if sorted(c for _, c in saved) != sorted(c for _, c in mine):

            def names(sources: list[list[str]]) -> str:
                return ", ".join(name for name, _ in sources) or "the run's dataset alone"

            raise DatasetError(
                f"the checkpoint's model was trained on {names(saved)}; this run's datasets ({names(mine)}) "
                "hold other data (their checksums differ): give the original files, or train a new run"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.return_scale = float(state["return_scale"])
        self.target_return = np.asarray(state["target_return"], dtype=np.float32)


class DTPolicy:
    """Runs a decision transformer in a batched environment (the ``Policy`` protocol).

    Under the ``independent`` and ``shared`` layouts each agent's action depends only on its own history
    (decentralized execution); under ``centralized`` (the teacher) on all agents'. The return-to-go starts at
    ``target_return`` (N,) and is decremented by each agent's own reward. Under ``factored`` the model is
    told which agents act, by the rule its training data was marked with
    (``marlkd.data.windows.acting_agents``): not after the agent's own ``done``, not dead (all-zero
    observation, at most one available action).
    """

    def __init__(
        self,
        model: DecisionTransformer,
        layout: Layout,
        n_agents: int,
        n_actions: int,
        context: int,
        return_scale: float,
        target_return: np.ndarray,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        deterministic: bool = True,
    ) -> None:
        self.model, self.layout, self.n_agents, self.n_actions = model, layout, n_agents, n_actions
        self.context, self.return_scale, self.device = context, return_scale, device
        self.target_return = np.broadcast_to(np.asarray(target_return, np.float32), (n_agents,)).copy()
        self.autocast_dtype, self.deterministic = autocast_dtype, deterministic
        self.max_timestep = model.cfg.max_timestep

    def reset(self, num_envs: int) -> None:
        K, N = self.context, self.n_agents
        self.t = 0
        self.obs: torch.Tensor | None = None  # (B, K, N, O) rolling window, allocated on first act
        self.actions = torch.zeros(num_envs, K, N, dtype=torch.int64, device=self.device)
        self.returns = torch.zeros(num_envs, K, N, device=self.device)
        self.timesteps = torch.zeros(num_envs, K, dtype=torch.int64, device=self.device)
        self.mask = torch.zeros(num_envs, K, dtype=torch.bool, device=self.device)
        self.present = torch.ones(num_envs, K, N, dtype=torch.bool, device=self.device)
        self.ended = torch.zeros(num_envs, N, dtype=torch.bool, device=self.device)
        self.current_return = (
            torch.as_tensor(self.target_return, device=self.device).expand(num_envs, N).clone()
        )

    def _push(self, buffer: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return torch.cat((buffer[:, 1:], value.unsqueeze(1)), dim=1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, action_mask: np.ndarray | None) -> np.ndarray:
        # a copy: environments may hand out read-only arrays (SMAX's zero-copy views)
        obs_t = torch.tensor(obs, dtype=torch.float32, device=self.device)  # (B, N, O)
        B = obs_t.shape[0]
        if self.obs is None:
            self.obs = torch.zeros(B, self.context, *obs_t.shape[1:], device=self.device)
        self.obs = self._push(self.obs, obs_t)
        self.returns = self._push(self.returns, self.current_return / self.return_scale)
        self.actions = self._push(
            self.actions, torch.zeros(B, self.n_agents, dtype=torch.int64, device=self.device)
        )
        step = torch.full((B,), min(self.t, self.max_timestep - 1), dtype=torch.int64, device=self.device)
        self.timesteps = self._push(self.timesteps, step)
        self.mask = self._push(self.mask, torch.ones(B, dtype=torch.bool, device=self.device))
        mask_t = None if action_mask is None else torch.tensor(action_mask, device=self.device)  # a copy
        present = None
        if self.layout == Layout.FACTORED:
            # a copy whose whole team is done is frozen until the batch ends: nothing to hide there
            ended = self.ended & ~self.ended.all(-1, keepdim=True)
            self.present = self._push(self.present, ~ended & ~dead_agents(obs_t, mask_t))
            present = None if bool(self.present.all()) else self.present
        window = Window(
            self.returns,
            self.obs,
            self.actions,
            self.timesteps,
            self.mask,
            None,
            torch.zeros(B, dtype=torch.int64),
            self.timesteps,
            present,
        )
        inputs = to_inputs(window, self.layout, self.n_actions)
        self.model.eval()
        with autocast(self.device, self.autocast_dtype):
            logits, _ = self.model(*inputs.args(), **inputs.kwargs())
        logits = per_agent_logits(logits.float(), self.layout, self.n_agents)[:, -1]  # (B, N, A)
        if mask_t is not None:
            logits = masked_logits(logits, mask_t)
        if self.deterministic:
            actions = logits.argmax(-1)
        else:
            actions = torch.distributions.Categorical(logits=logits).sample()
        self.actions[:, -1] = actions
        return actions.cpu().numpy().astype(np.int64)

    def observe(self, rewards: np.ndarray, done: np.ndarray) -> None:
        self.current_return -= torch.as_tensor(rewards, dtype=torch.float32, device=self.device)
        done_t = torch.as_tensor(np.asarray(done, dtype=bool), device=self.device)
        self.ended |= done_t.reshape(self.ended.shape)
        self.t += 1
