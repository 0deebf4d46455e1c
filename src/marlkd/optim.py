"""Optimisation pieces every algorithm shares: AdamW with warm-up, clipped steps, precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch


def make_optimizer(
    params_or_groups: Iterable, train
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (betas 0.9, 0.95) with a linear warm-up over ``train.warmup_steps`` updates, then constant.

    PyTorch's fused AdamW where every parameter lives on a CPU or CUDA device (one kernel for all
    parameters: a few percent of a decision transformer's step on this CPU, ``benchmarks/bench_cost.py``).
    """
    # Materialize parameters (and each group's, which may be a generator) before looking at their devices.
    params_or_groups = [
        {**item, "params": _as_list(item["params"])} if isinstance(item, dict) else item
        for item in params_or_groups
    ]
    tensors = [p for item in params_or_groups for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    optimizer = torch.optim.AdamW(
        params_or_groups, lr=train.lr, betas=(0.9, 0.95), weight_decay=train.weight_decay, fused=fused or None
    )
    warmup = max(1, train.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return optimizer, scheduler


def _as_list(params: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """A parameter group's ``params`` as a list (PyTorch also takes a single tensor)."""
    return [params] if isinstance(params, torch.Tensor) else list(params)


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    clip: float,
    members: int = 0,
) -> float:
    """Backward, clip, step; returns the pre-clip gradient norm (over all parameters).

    ``clip`` > 0 bounds the global gradient norm, or, with ``members`` > 1 (the optimizer holds ensembles of
    that many independent members, every parameter stacked on its first axis), each member's own gradient
    norm (:func:`clip_grad_norm_per_member`): one member's large gradient then does not shrink another's
    step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if members > 1 and clip > 0:
        norm = clip_grad_norm_per_member(params, members, clip).square().sum().sqrt()
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(norm)


def clip_grad_norm_per_member(params: list[torch.Tensor], members: int, max_norm: float) -> torch.Tensor:
    """Scale each ensemble member's gradient to norm at most ``max_norm``; returns pre-clip norms ``(M,)``.

    Every parameter's first axis is the member axis (``marlkd.models.layers.EnsembleLinear``); member m's
    norm is over its slices of all ``params``."""
    grads = [p.grad for p in params if p.grad is not None]
    for g in grads:
        if g.shape[0] != members:
            raise ValueError(
                f"per-member clipping: a gradient of shape {tuple(g.shape)} is not {members} members"
            )
    if not grads:
        return torch.zeros(members)
    norms = torch.stack([g.reshape(members, -1).float().square().sum(-1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (M,)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """True when bf16 autocast pays off on this CPU: it has AMX (Intel Sapphire Rapids and later), or
    AVX-512 BF16 on an AMD CPU (Zen 4 and later). An Intel CPU with AVX-512 BF16 but no AMX runs the
    decision transformer's bf16 matmuls slower than fp32 (docs/performance.md), so it trains in fp32.

    ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None; no file: False)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return "amx_bf16" in flags or ("avx512_bf16" in flags and "AuthenticAMD" in flags)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a ``TrainConfig.precision`` on ``device`` (None: fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_supports_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
