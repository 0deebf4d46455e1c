"""A teacher whose size does not grow with the number of agents: factored (time x agent) attention.

The concatenation teacher embeds all n agents' (R, o, a) of a timestep as one token, so its input layer,
its heads and its parameter count grow with n, the agent order is baked into its weights and one model
serves one team size. This teacher instead keeps one token per (timestep, agent):

    x[t, i] = W_R R^i_t + W_o o^i_t + W_a [a^i_{t-1}; none] + E_time[t] (+ E_agent[i])

a *step token* holding agent i's return-to-go and observation at t and its previous action (the action
input is shifted by one step inside the model, so the token at t never sees any a_t; "none" marks the
first step of a window or of an episode). Blocks alternate two attentions and an MLP, all pre-norm:

    x <- x + TimeAttention(LN x)    causal over each agent's own K steps
    x <- x + AgentAttention(LN x)   full over the agents of one step
    x <- x + MLP(LN x)

so after two blocks the token (t, i) has seen every agent's data at steps <= t (the concatenation
teacher's information, without a_t). Every weight is shared across agents (the MLP action head too): the
feature f^i is the head's hidden layer at agent i's own token, the logits of agent i come from it, and
permuting the agents permutes the outputs. Agent-id embeddings (``agent_ids`` > 0) break that symmetry
for teams whose agents are not exchangeable; their table has a fixed size, so no parameter depends on n.

A presence mask ``(B, K, N)`` marks absent (padding, dead) agents: no present agent's token attends to an
absent one, so present agents' outputs do not depend on absent agents' inputs, and one model runs on
batches padded to any team size.

The call contract is the decision transformer's (``marlkd.models.decision_transformer``) with a member
axis M = 1 and an agent axis N: returns ``(1, B, K, N)``, observations ``(1, B, K, N, O)``, one-hot actions
``(1, B, K, N, A)``, timesteps ``(1, B, K)``, validity mask ``(1, B, K)``; outputs logits
``(1, B, K, N, A)`` and features ``(1, B, K, N, F)`` (N heads, one per agent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.config import check, check_at_least_one, check_dropouts
from marlkd.models.layers import Dropout, dropout


@dataclass(frozen=True)
class FactoredConfig:
    """Sizes of a factored teacher; none depends on the number of agents.

    Attributes:
        obs_dim: one agent's observation size O.
        n_actions: A, actions per agent.
        head_hidden: width F of the shared MLP action head's hidden layer (the features f^i).
        context: K, timesteps per window.
        max_timestep: size of the timestep embedding.
        width: D. layers: factored blocks (each: time attention, agent attention, MLP). heads: attention
            heads. dropout: on embeddings, attention and residuals.
        attn_dropout: dropout on attention probabilities; None: ``dropout``.
        agent_ids: size of the agent-id embedding table (0: none, agents exchangeable); teams of up to
            this many agents can be run.
    """

    obs_dim: int
    n_actions: int
    head_hidden: int = 128
    context: int = 20
    max_timestep: int = 1000
    width: int = 128
    layers: int = 3
    heads: int = 1
    dropout: float = 0.1
    attn_dropout: float | None = None
    agent_ids: int = 0

    def __post_init__(self) -> None:
        sizes = ("obs_dim", "n_actions", "head_hidden", "context", "max_timestep", "width", "layers")
        check_at_least_one(self, "model", sizes)
        check(
            self.heads >= 1 and self.width % self.heads == 0,
            "model.heads",
            f"width {self.width} must be a multiple of heads {self.heads}",
        )
        check_dropouts("model", self.dropout, self.attn_dropout)
        check(self.agent_ids >= 0, "model.agent_ids", f"must be >= 0, got {self.agent_ids}")


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, causal: bool, p: float
) -> torch.Tensor:
    """Softmax attention ``(S, heads, L, d)`` -> ``(S, heads, L, d)``.

    ``allowed`` ``(S, 1, L, L)`` bool (True: query may attend to key), or None: every key (``causal``: every
    key at or before the query). On the CPU two matmuls and a softmax (faster there than the fused kernel
    at these lengths, see ``CausalSelfAttention._attention_unfused``); elsewhere
    ``F.scaled_dot_product_attention``."""
    L = q.shape[-2]
    if causal and allowed is None:
        if q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        allowed = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (S, heads, L, L)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return dropout(probs, p).to(v.dtype) @ v


class AxisAttention(nn.Module):
    """Multi-head self-attention over ``(S, L, D)``: time (S = B*N, L = K), agents (S = B*K, L = N)."""

    def __init__(self, cfg: FactoredConfig, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = cfg.heads, causal
        self.p = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.resid_drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        S, L, D = x.shape
        q, k, v = (
            t.view(S, L, self.heads, D // self.heads).transpose(1, 2) for t in self.qkv(x).split(D, dim=-1)
        )  # (S, heads, L, d) each
        y = attention(q, k, v, allowed, self.causal, self.p if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(S, L, D)))


class FactoredBlock(nn.Module):
    """Time attention, agent attention, MLP; each pre-norm with a residual. Tokens ``(B, K, N, D)``."""

    def __init__(self, cfg: FactoredConfig) -> None:
        super().__init__()
        D = cfg.width
        self.ln_time, self.ln_agent, self.ln_mlp = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.time_attn = AxisAttention(cfg, causal=True)
        self.agent_attn = AxisAttention(cfg, causal=False)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.drop = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, time_allowed: torch.Tensor | None, agent_allowed: torch.Tensor | None
    ) -> torch.Tensor:
        B, K, N, D = x.shape
        h = self.ln_time(x).transpose(1, 2).reshape(B * N, K, D)  # each agent's own K steps
        x = x + self.time_attn(h, time_allowed).view(B, N, K, D).transpose(1, 2)
        h = self.ln_agent(x).reshape(B * K, N, D)  # the N agents of each step
        x = x + self.agent_attn(h, agent_allowed).view(B, K, N, D)
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln_mlp(x)))))


class FactoredTeacher(nn.Module):
    """The factored (time x agent) teacher; see the module docstring for the contract."""

    def __init__(self, cfg: FactoredConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        self.embed_return = nn.Linear(1, D)
        self.embed_obs = nn.Linear(cfg.obs_dim, D)
        self.embed_prev_action = nn.Linear(cfg.n_actions + 1, D)  # one-hot a_{t-1}, then "none"
        self.embed_time = nn.Embedding(cfg.max_timestep, D)
        self.embed_agent = nn.Embedding(cfg.agent_ids, D) if cfg.agent_ids > 0 else None
        self.embed_ln = nn.LayerNorm(D)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(FactoredBlock(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(D)
        self.head_fc1 = nn.Linear(D, cfg.head_hidden)  # shared by all agents: f^i = gelu(fc1(h^i))
        self.head_fc2 = nn.Linear(cfg.head_hidden, cfg.n_actions)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 init: N(0, 0.02); residual projections scaled by 1/sqrt(number of residual branches)
        residual_std = 0.02 / (3 * self.cfg.layers) ** 0.5
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("attn.proj", "fc2")) and "head" not in name else 0.02
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on linear weights, none on biases, norms and embeddings."""
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        ids = {id(p) for p in decay}
        no_decay = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def forward(
        self,
        returns: torch.Tensor,
        obs: torch.Tensor,
        actions: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
        presence: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(1, B, K, N, A)`` and features ``(1, B, K, N, F)``; ``presence`` ``(1, B, K, N)`` bool or
        None (every agent present). Outputs at absent agents or padded steps are computed but meaningless."""
        cfg = self.cfg
        if mask.shape[0] != 1:
            raise ValueError(f"the factored teacher has one member; got inputs with {mask.shape[0]}")
        returns, obs, actions, timesteps, mask = returns[0], obs[0], actions[0], timesteps[0], mask[0]
        B, K, N = returns.shape
        if self.embed_agent is not None and N > cfg.agent_ids:
            raise ValueError(f"{N} agents, but the agent-id embedding has {cfg.agent_ids} entries")
        present = None if presence is None else presence[0]

        # previous action: a_{t-1} one-hot, or "none" at a window's first step and after left padding
        prev = torch.cat((actions.new_zeros(B, 1, N, cfg.n_actions), actions[:, :-1]), dim=1)  # (B, K, N, A)
        has_prev = torch.cat((mask.new_zeros(B, 1), mask[:, :-1]), dim=1)[:, :, None, None]  # (B, K, 1, 1)
        prev = torch.cat((prev * has_prev, (~has_prev).to(prev.dtype).expand(B, K, N, 1)), dim=-1)

        time = self.embed_time(timesteps.clamp(0, cfg.max_timestep - 1))[:, :, None]  # (B, K, 1, D)
        x = self.embed_return(returns[..., None]) + self.embed_obs(obs) + self.embed_prev_action(prev) + time
        if self.embed_agent is not None:
            x = x + self.embed_agent.weight[:N]  # (N, D), broadcast over (B, K)
        x = self.drop(self.embed_ln(x))  # (B, K, N, D)

        time_allowed, agent_allowed = self._masks(mask, present, N)
        for block in self.blocks:
            x = block(x, time_allowed, agent_allowed)
        features = F.gelu(self.head_fc1(self.ln_f(x)))  # (B, K, N, F)
        logits = self.head_fc2(features)  # (B, K, N, A)
        return logits[None], features[None]

    @staticmethod
    def _masks(
        mask: torch.Tensor, present: torch.Tensor | None, n_agents: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Attention masks from the step mask ``(B, K)`` and presence ``(B, K, N)``: time ``(B*N, 1, K, K)``
        (causal; keys at valid steps where the agent is present), agents ``(B*K, 1, N, N)`` (keys of present
        agents); None where nothing is hidden. A query may always attend to itself (no empty row)."""
        B, K = mask.shape
        time_allowed = agent_allowed = None
        if present is not None or not bool(mask.all()):
            token = mask[:, :, None].expand(B, K, n_agents)
            if present is not None:
                token = token & present  # (B, K, N)
            keys = token.transpose(1, 2).reshape(B * n_agents, K)  # the time attention's sequence order
            causal = torch.ones(K, K, dtype=torch.bool, device=mask.device).tril()
            eye = torch.eye(K, dtype=torch.bool, device=mask.device)
            time_allowed = (causal & (keys[:, None, :] | eye))[:, None]  # (B*N, 1, K, K)
        if present is not None:
            eye = torch.eye(n_agents, dtype=torch.bool, device=mask.device)
            agent_allowed = (present.reshape(B * K, 1, n_agents) | eye)[:, None]  # (B*K, 1, N, N)
        return time_allowed, agent_allowed
