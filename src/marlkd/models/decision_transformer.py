"""The one decision-transformer core behind IDT, MADT, the centralized teacher and the students.

Tokens per timestep are (R_t, o_t, a_t), each embedded by a linear layer, plus a learned timestep
embedding; GPT blocks with causal self-attention (``F.scaled_dot_product_attention``); the hidden state at
the o_t token predicts a_t. Every weight carries a member axis M (``marlkd.models.layers``): M = N runs N
independent per-agent models in one batched forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from marlkd.config import check, check_at_least_one, check_dropouts
from marlkd.models.layers import (
    Dropout,
    EnsembleEmbedding,
    EnsembleLayerNorm,
    EnsembleLinear,
    EnsembleMLP,
    dropout,
    norm_linear,
)


@dataclass(frozen=True)
class DTConfig:
    """Everything that defines a decision-transformer network: the sizes a dataset and an agent layout fix
    and the hyperparameters (a method's ``DTModelConfig`` in ``marlkd.algos._dt`` sets these under the same
    names).

    Attributes:
        return_dim: return-to-go inputs per token (1 per agent; N for the teacher).
        obs_dim: observation inputs per token (N*O for the teacher; O+N with agent ids for MADT).
        action_dim: one-hot action inputs per token (A; N*A for the teacher).
        n_actions: actions predicted per head.
        n_heads_out: action heads (1; N for the teacher, one per agent).
        head_hidden: width of the hidden layer of an MLP action head (0: a linear head). The teacher's
            feature for agent i is the hidden layer of head i.
        context: K, timesteps per window.
        max_timestep: size of the timestep embedding (the episode length limit).
        width: D. layers: transformer blocks. heads: attention heads. dropout: on embeddings,
            attention and residuals.
        members: M independent copies of all weights.
        attn_dropout: dropout on the attention probabilities; None: ``dropout``. On a GPU, 0 lets PyTorch
            run its fused (flash) attention kernel; the CPU always computes attention unfused (faster there).
    """

    return_dim: int
    obs_dim: int
    action_dim: int
    n_actions: int
    n_heads_out: int = 1
    head_hidden: int = 0
    context: int = 20
    max_timestep: int = 1000
    width: int = 128
    layers: int = 3
    heads: int = 1
    dropout: float = 0.1
    members: int = 1
    attn_dropout: float | None = None

    def __post_init__(self) -> None:
        check(
            self.width % self.heads == 0, "model.heads", f"width {self.width} not divisible by {self.heads}"
        )
        sizes = ("return_dim", "obs_dim", "action_dim", "n_actions", "n_heads_out", "context", "width")
        check_at_least_one(self, "model", (*sizes, "layers", "heads", "members", "max_timestep"))
        check_dropouts("model", self.dropout, self.attn_dropout)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.qkv = EnsembleLinear(cfg.members, cfg.width, 3 * cfg.width)
        self.proj = EnsembleLinear(cfg.members, cfg.width, cfg.width)
        self.resid_drop = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, norm: EnsembleLayerNorm
    ) -> torch.Tensor:
        """Attention over ``norm(x)``, ``x (M, B, L, D)`` (the norm goes into the qkv projection)."""
        M, B, L, D = x.shape
        q, k, v = norm_linear(norm, self.qkv, x).split(D, dim=-1)  # (M, B, L, D) each
        # members folded into the batch: (M * B, heads, L, head width), the layout fused kernels take
        q, k, v = (t.view(M * B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        drop = self.attn_dropout if self.training else 0.0
        if x.device.type == "cpu":
            y = self._attention_unfused(q, k, v, attn_mask, drop)
        elif attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(M, B, L, D)  # (M, B, L, D)
        return self.resid_drop(self.proj(y))

    @staticmethod
    def _attention_unfused(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, p: float
    ) -> torch.Tensor:
        """Causal softmax attention with dropout ``p`` on its probabilities, unfused: on the CPU, at a
        decision transformer's sequence lengths (3K tokens), two matmuls and a softmax run 2.3-2.7x faster
        forward and backward than ``scaled_dot_product_attention``'s fused kernel, and the mask comes from
        :func:`dropout` (PyTorch's CPU dropout is slow). ``benchmarks/bench_attention.py`` measures it."""
        L = q.shape[-2]
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (MB, heads, L, L)
        if attn_mask is None:
            attn_mask = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~attn_mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        return dropout(probs, p).to(v.dtype) @ v


class Block(nn.Module):
    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.ln1 = EnsembleLayerNorm(cfg.members, cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = EnsembleLayerNorm(cfg.members, cfg.width)
        self.mlp = EnsembleMLP(cfg.members, cfg.width, 4 * cfg.width, cfg.width)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(x, attn_mask, self.ln1)  # (M, B, L, D)
        return x + self.drop(self.mlp(x, self.ln2))


class DecisionTransformer(nn.Module):
    """M decision transformers in one module.

    ``forward`` takes returns-to-go ``(M, B, K, return_dim)``, observations ``(M, B, K, obs_dim)``, one-hot
    actions ``(M, B, K, action_dim)``, timesteps ``(M, B, K)`` int64 and a validity mask ``(M, B, K)`` bool
    (False on left padding), and returns ``(logits, features)``: logits ``(M, B, K, H, A)`` for H heads,
    features ``(M, B, K, H, F)`` — the hidden layer of each MLP head, or the o_t hidden state (F = D, the same
    for every head) for a linear head.
    """

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        M, D = cfg.members, cfg.width
        self.embed_return = EnsembleLinear(M, cfg.return_dim, D)
        self.embed_obs = EnsembleLinear(M, cfg.obs_dim, D)
        self.embed_action = EnsembleLinear(M, cfg.action_dim, D)
        self.embed_time = EnsembleEmbedding(M, cfg.max_timestep, D)
        self.embed_ln = EnsembleLayerNorm(M, D)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = EnsembleLayerNorm(M, D)
        if cfg.head_hidden > 0:
            # one MLP head per output: (M * H) independent MLPs
            self.head = EnsembleMLP(M * cfg.n_heads_out, D, cfg.head_hidden, cfg.n_actions)
        else:
            self.head = EnsembleLinear(M, D, cfg.n_heads_out * cfg.n_actions)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)
        for name, module in self.named_modules():
            if isinstance(module, EnsembleLinear):
                std = 0.02
                if name.endswith("attn.proj") or name.endswith("mlp.fc2"):
                    std = 0.02 / (2 * self.cfg.layers) ** 0.5
                module.reset_parameters(std)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on matrices, none on biases, norms and embeddings."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            is_matrix = name.endswith("weight") and p.dim() == 3 and "embed_time" not in name
            is_norm = ".ln" in name or name.startswith("ln") or "embed_ln" in name
            (decay if is_matrix and not is_norm else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def forward(
        self,
        returns: torch.Tensor,
        obs: torch.Tensor,
        actions: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        M, B, K = mask.shape
        time = self.embed_time(timesteps.clamp(0, cfg.max_timestep - 1))  # (M, B, K, D)
        tokens = torch.stack(
            (
                self.embed_return(returns) + time,
                self.embed_obs(obs) + time,
                self.embed_action(actions) + time,
            ),
            dim=3,
        ).reshape(M, B, 3 * K, cfg.width)  # (M, B, 3K, D): R_1, o_1, a_1, R_2, ...
        x = self.drop(self.embed_ln(tokens))
        attn_mask = self._attention_mask(mask)
        for block in self.blocks:
            x = block(x, attn_mask)
        h = self.ln_f(x.reshape(M, B, K, 3, cfg.width)[:, :, :, 1])  # (M, B, K, D) at the o_t tokens
        H, A = cfg.n_heads_out, cfg.n_actions
        if cfg.head_hidden > 0:
            h_heads = h.unsqueeze(1).expand(M, H, B, K, cfg.width).reshape(M * H, B, K, cfg.width)
            features = self.head.hidden(h_heads)  # (M*H, B, K, F)
            logits = self.head.fc2(features)  # (M*H, B, K, A)
            features = features.reshape(M, H, B, K, -1).permute(0, 2, 3, 1, 4)  # (M, B, K, H, F)
            logits = logits.reshape(M, H, B, K, A).permute(0, 2, 3, 1, 4)  # (M, B, K, H, A)
        else:
            logits = self.head(h).reshape(M, B, K, H, A)
            features = h.unsqueeze(3).expand(M, B, K, H, cfg.width)
        return logits, features

    @staticmethod
    def _attention_mask(mask: torch.Tensor) -> torch.Tensor | None:
        """Causal mask over the 3K tokens that also hides left padding; None when nothing is padded."""
        if bool(mask.all()):
            return None
        M, B, K = mask.shape
        L = 3 * K
        key_valid = mask.repeat_interleave(3, dim=-1)  # (M, B, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=mask.device)
        # a padded query attends to itself only, so no row is empty (an all-masked row gives NaN)
        return (causal & (key_valid[:, :, None, :] | eye)).reshape(M * B, 1, L, L)  # (M*B, 1, L, L)
