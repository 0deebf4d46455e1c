"""What relational distillation transfers, measured on one student batch (``ours`` logs these as
``distill/*`` every ``train.log_every`` updates).

Angles are in degrees, taken between every pair of agents i < j at the same dataset step:

- ``angle_teacher_mean``/``_std``: the teacher's raw features f^i, f^j (the relation to transfer);
- ``angle_mapped_teacher_mean``/``_std``: through the teacher-side mapping M;
- ``angle_mapped_student_mean``/``_std``: the students' features through N;
- ``angle_corr``: the correlation over the batch's (step, pair)s of the teacher's raw angle and the
  students' mapped angle (1: the students reproduce the teacher's relation up to an affine map);
- ``mapped_cosine_teacher``/``_student``: the mean cosine between different steps' mapped features of the
  same agent (1: every step is mapped to one direction, the mappings have collapsed).

Beside them, ``grad_norm_<term>``: the norm of the gradient each weighted loss term sends into the students.

A side has **collapsed** when its mapped cosine is above :data:`COLLAPSE_COSINE` and its angles' spread is
below :data:`COLLAPSE_SPREAD` of the teacher's: the relational loss is then near zero whatever the
students do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLLAPSE_COSINE = 0.9
COLLAPSE_SPREAD = 0.1
# At most this many steps of a batch enter the cross-step cosine (an (S, S) Gram matrix per agent).
COSINE_SAMPLES = 256


class CollapseWarning(UserWarning):
    """The mapped features of relational distillation have collapsed onto one direction."""


def pair_angles(x: torch.Tensor) -> torch.Tensor:
    """Angles in degrees between agents i < j: ``(S, N, P)`` -> ``(S, N(N-1)/2)``."""
    u = F.normalize(x.float(), dim=-1)
    cos = u @ u.transpose(-1, -2)  # (S, N, N)
    i, j = torch.triu_indices(x.shape[-2], x.shape[-2], offset=1, device=x.device)
    return torch.rad2deg(torch.arccos(cos[:, i, j].clamp(-1.0, 1.0)))


def cross_step_cosine(x: torch.Tensor) -> float:
    """Mean cosine between different steps' vectors of the same agent: ``(S, N, P)`` -> a number."""
    u = F.normalize(x[:COSINE_SAMPLES].float(), dim=-1).transpose(0, 1)  # (N, S, P)
    S = u.shape[1]
    if S < 2:
        return float("nan")
    gram = u @ u.transpose(-1, -2)  # (N, S, S)
    off_diagonal = gram.sum((-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    return float((off_diagonal / (S * (S - 1))).mean())


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two equally shaped tensors (0 when either is constant)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    denom = (a.square().sum() * b.square().sum()).sqrt()
    return float((a * b).sum() / denom) if denom > 1e-12 else 0.0


@torch.no_grad()
def relation_diagnostics(
    teacher_features: torch.Tensor, teacher_maps: torch.Tensor, student_maps: torch.Tensor
) -> dict[str, float]:
    """The ``distill/*`` relation metrics of the module docstring from the valid steps of a batch:
    teacher features ``(S, N, F)``, teacher-side maps ``(S, N, P)``, student-side maps ``(S, N, P')``."""
    raw, mapped_t, mapped_s = (pair_angles(x) for x in (teacher_features, teacher_maps, student_maps))
    out = {}
    for name, a in (("teacher", raw), ("mapped_teacher", mapped_t), ("mapped_student", mapped_s)):
        out[f"distill/angle_{name}_mean"] = float(a.mean()) if a.numel() else float("nan")
        out[f"distill/angle_{name}_std"] = float(a.std()) if a.numel() > 1 else float("nan")
    out["distill/angle_corr"] = correlation(raw, mapped_s)
    out["distill/mapped_cosine_teacher"] = cross_step_cosine(teacher_maps)
    out["distill/mapped_cosine_student"] = cross_step_cosine(student_maps)
    return out


def term_grad_norms(terms: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, float]:
    """``distill/grad_norm_<term>``: the norm of the gradient each weighted loss term (a scalar) sends into
    the trainable parameters of ``model`` (the students' transformers); the graph is kept for the update."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for name, term in terms.items():
        if not term.requires_grad:
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        squares = [g.float().square().sum() for g in grads if g is not None]
        out[f"distill/grad_norm_{name}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return out


def collapsed_metric(metrics: dict[str, float]) -> str | None:
    """The name of the cosine metric of a side that has collapsed (see the module docstring), or None."""
    teacher_std = metrics.get("distill/angle_teacher_std", float("nan"))
    for side in ("student", "teacher"):
        cosine = metrics.get(f"distill/mapped_cosine_{side}", float("nan"))
        spread = metrics.get(f"distill/angle_mapped_{side}_std", float("nan"))
        if math.isfinite(cosine) and cosine > COLLAPSE_COSINE and spread < COLLAPSE_SPREAD * teacher_std:
            return f"distill/mapped_cosine_{side}"
    return None


def collapse_message(metric: str, metrics: dict[str, float], update: int) -> str:
    side = metric.rsplit("_", 1)[-1]
    return (
        f"relational distillation collapsed at student update {update}: {metric} = {metrics[metric]:.3f} "
        f"(> {COLLAPSE_COSINE}) and distill/angle_mapped_{side}_std = "
        f"{metrics[f'distill/angle_mapped_{side}_std']:.2f} deg (< {COLLAPSE_SPREAD} x the teacher's "
        f"{metrics['distill/angle_teacher_std']:.2f} deg): the mapped features point one way and L_rel no "
        "longer carries the teacher's relation; a stop-gradient teacher side (algo.teacher_map = ema, "
        "frozen or identity) or algo.spread keeps it (docs/method.md)"
    )
