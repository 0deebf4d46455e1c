"""Ensemble building blocks: layers whose weights carry a leading member axis M.

A model built from these layers holds M independent copies of its weights and runs all of them in one
batched matmul: M = 1 is an ordinary model (MADT, the teacher), M = N gives N independent per-agent
models (IDT, the students) trained as one ensemble. Inputs carry the member axis first: ``(M, ..., C)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Dropout draws its keep/drop decisions at this resolution: 15 random bits per element.
_DROPOUT_LEVELS = 1 << 15


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``.

    On the CPU the mask comes from 63-bit random integers, each cut into four 15-bit uniform draws: one
    random number per four elements, where ``torch.rand`` draws one per element and PyTorch's CPU dropout
    a Bernoulli per element (either costs as much as a matmul at a decision transformer's shapes;
    ``benchmarks/bench_dt_vs_hf.py`` measures the step). ``p`` is rounded to a multiple of 2^-15 (0.1
    becomes 0.100006) and the scale is that of the rounded probability, so the expectation is unchanged.
    Other devices use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    threshold = round(p * _DROPOUT_LEVELS)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()  # uniform on [0, 2^63)
    draws = words.view(torch.int16)[:n].bitwise_and_(_DROPOUT_LEVELS - 1)  # uniform on [0, 2^15)
    scale = torch.ge(draws, threshold).to(x.dtype).mul_(_DROPOUT_LEVELS / (_DROPOUT_LEVELS - threshold))
    return x * scale.view(x.shape)


class Dropout(nn.Module):
    """``nn.Dropout`` with :func:`dropout`'s faster mask on the CPU (same semantics)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EnsembleLinear(nn.Module):
    """M independent ``nn.Linear(in_features, out_features)`` layers: ``(M, ..., in) -> (M, ..., out)``."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        # nn.Linear's default scale, or an explicit std (GPT-2 style init)
        if std is None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.weight, -bound, bound)
        else:
            nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_weights(x, self.weight, self.bias)

    def apply_weights(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This layer's map with ``weight (M, in, out)`` and ``bias (M, 1, out)`` in place of its own."""
        shape = x.shape
        flat = x.reshape(self.members, -1, self.in_features)  # (M, rows, in)
        if bias is None:
            out = torch.bmm(flat, weight)
        else:
            out = torch.baddbmm(bias, flat, weight)  # (M, rows, out)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"members={self.members}, in={self.in_features}, out={self.out_features}"


class EnsembleLayerNorm(nn.Module):
    """M independent LayerNorms over the last axis: ``(M, ..., C)``."""

    def __init__(self, members: int, features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.features, self.eps = features, eps
        self.weight = nn.Parameter(torch.ones(members, 1, features))
        self.bias = nn.Parameter(torch.zeros(members, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:  # one member: PyTorch's fused affine layer norm
            return F.layer_norm(x, (self.features,), self.weight[0, 0], self.bias[0, 0], self.eps)
        shape = x.shape
        y = self.normalize(x).reshape(shape[0], -1, self.features)  # (M, rows, C)
        return (y * self.weight + self.bias).reshape(shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The layer norm without its scale and shift."""
        return F.layer_norm(x, (self.features,), eps=self.eps)


def norm_linear(norm: EnsembleLayerNorm, linear: EnsembleLinear, x: torch.Tensor) -> torch.Tensor:
    """``linear(norm(x))`` for ``x (M, ..., C)``, with more than one member computed as
    ``normalize(x) @ (diag(scale) W) + (shift W + b)``: the members' scales and shifts go into the linear
    layer's weights (M x C x out numbers) instead of onto the activations (M x rows x C), which saves two
    passes over the activations forward and four backward (a fused per-member layer norm does not exist
    in PyTorch; one member keeps ``F.layer_norm``'s fused affine). The parameters and their gradients are
    the same; the products are summed in another order."""
    if norm.weight.shape[0] == 1 or linear.bias is None:
        return linear(norm(x))
    weight = norm.weight.transpose(1, 2) * linear.weight  # (M, C, out): row c scaled by scale_c
    bias = torch.baddbmm(linear.bias, norm.bias, linear.weight)  # (M, 1, out)
    return linear.apply_weights(norm.normalize(x), weight, bias)


class EnsembleEmbedding(nn.Module):
    """M independent embedding tables: indices ``(M, ...)`` -> ``(M, ..., C)``."""

    def __init__(self, members: int, num_embeddings: int, features: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.weight = nn.Parameter(torch.randn(members, num_embeddings, features) * 0.02)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        members = index.shape[0]
        flat = index.reshape(members, -1)  # (M, rows)
        offset = torch.arange(members, device=index.device)[:, None] * self.num_embeddings
        table = self.weight.reshape(-1, self.weight.shape[-1])
        return F.embedding(flat + offset, table).reshape(*index.shape, -1)


class EnsembleMLP(nn.Module):
    """M independent two-layer MLPs ``in -> hidden -> out`` with GELU; ``hidden()`` exposes the features."""

    def __init__(self, members: int, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = EnsembleLinear(members, in_features, hidden)
        self.fc2 = EnsembleLinear(members, hidden, out_features)

    def hidden(self, x: torch.Tensor, norm: EnsembleLayerNorm | None = None) -> torch.Tensor:
        """GELU(fc1(x)), or of ``norm(x)`` (:func:`norm_linear`)."""
        return F.gelu(self.fc1(x) if norm is None else norm_linear(norm, self.fc1, x))

    def forward(self, x: torch.Tensor, norm: EnsembleLayerNorm | None = None) -> torch.Tensor:
        return self.fc2(self.hidden(x, norm))


class MLP(nn.Module):
    """A plain MLP: ``in -> hidden (x layers, ReLU) -> out``. Used by BC, value nets, mapping networks."""

    def __init__(self, in_features: int, hidden: int, out_features: int, layers: int = 2) -> None:
        super().__init__()
        dims = [in_features] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        blocks.append(nn.Linear(dims[-1], out_features))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
