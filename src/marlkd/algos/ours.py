"""Ours: a centralized teacher decision transformer distilled into n decentralized student DTs
(Algorithm 1 of Tseng et al.).

Phase 1 trains the teacher (``marlkd.algos.teacher``) on the action loss; it is then frozen and its
features f^i and logits at every dataset step are computed once. Phase 2 trains the n students as one
ensemble (each student sees only its own agent's trajectory) on

    L^i = L^i_action + alpha * L^i_rel + beta * L^i_KL,
    L^i_rel = sum_{j != i} Huber(angle(M(f^i), M(f^j)), angle(N(fbar^i), N(fbar^j))),
    L^i_KL  = KL(teacher's action distribution of agent i || student i's),

where M (teacher side) and N (student side) are two-layer mapping MLPs trained with the students and M
takes an optimizer step only every ``momentum_every``-th update of N (its gradients are averaged over
those updates). Student i's parameters get the gradient of L^i alone: in L^i the other students'
features enter as constants, as in the paper's per-agent update.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from marlkd import checkpoint
from marlkd.algos import AlgoEntry, register
from marlkd.algos._dt import DTLearner
from marlkd.algos.base import BaseAlgorithm
from marlkd.algos.teacher import teacher_outputs
from marlkd.algos.teacher_models import TeacherModelConfig, build_teacher
from marlkd.config import check
from marlkd.errors import ConfigError
from marlkd.models.layers import MLP
from marlkd.models.layouts import Layout, masked_logits
from marlkd.names import ABLATIONS, Ablation
from marlkd.optim import make_optimizer, optimizer_step


@dataclass(frozen=True)
class Config(TeacherModelConfig):
    """Distillation settings (the model fields are shared by the teacher and the students; ``teacher`` and
    ``agent_ids`` choose the teacher's network).

    Attributes:
        alpha: weight of the relational loss L_rel.
        beta: weight of the KL distillation loss L_KL.
        momentum_every: e, M steps once every e updates of N (1: together).
        mapping_width: width of the mapping networks M and N (two layers).
        ablation: one of ``full``, ``no-momentum`` (e = 1), ``no-mapping`` (angles on raw features),
            ``no-kl`` (beta = 0), ``no-kl-no-mapping``, ``kl-only`` (conventional distillation: alpha = 0),
            ``shared-mapping`` (M = N, one network).
        teacher_steps: teacher updates before distillation; None: the run's ``train.steps``.
        teacher_run: a finished ``teacher`` run directory on the same dataset to reuse instead of training
            one; its updates are then not counted here.
        teacher_cache: a directory shared by runs: the teacher trained for a (dataset, model config,
            training config, seed, teacher_steps) is saved there once and reused by every later run with
            the same key (Table 3's ablations share their teacher this way); a reused teacher's updates are
            not counted in this run.
        cos_eps: cosine similarities are clamped to [-1 + cos_eps, 1 - cos_eps] before arccos.
        huber_delta: the Huber loss's delta.
    """

    alpha: float = 1.0
    beta: float = 1.0
    momentum_every: int = 4
    mapping_width: int = 128
    ablation: Ablation = "full"
    teacher_steps: int | None = None
    teacher_run: str | None = None
    teacher_cache: str | None = None
    cos_eps: float = 1e-5
    huber_delta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.alpha >= 0, "algo.alpha", f"must be >= 0, got {self.alpha}")
        check(self.beta >= 0, "algo.beta", f"must be >= 0, got {self.beta}")
        check(self.momentum_every >= 1, "algo.momentum_every", f"must be >= 1, got {self.momentum_every}")
        check(self.mapping_width >= 1, "algo.mapping_width", "must be >= 1")
        check(
            self.ablation in ABLATIONS, "algo.ablation", f"must be one of {ABLATIONS}, got {self.ablation!r}"
        )
        check(self.teacher_steps is None or self.teacher_steps >= 0, "algo.teacher_steps", "must be >= 0")
        check(0 < self.cos_eps < 0.5, "algo.cos_eps", "must be in (0, 0.5)")
        check(self.huber_delta > 0, "algo.huber_delta", "must be > 0")
        check(
            self.ablation != "shared-mapping" or self.head_hidden == self.width,
            "algo.ablation",
            f"shared-mapping (one mapping network for teacher and student features) needs equal feature "
            f"sizes: head_hidden ({self.head_hidden}) == width ({self.width}); set algo.head_hidden",
        )


@dataclass(frozen=True)
class Switches:
    """What an ablation turns on and off."""

    alpha: float
    beta: float
    mapping: bool
    shared_mapping: bool
    momentum_every: int


def switches(cfg: Config) -> Switches:
    a, b, e = cfg.alpha, cfg.beta, cfg.momentum_every
    return {
        "full": Switches(a, b, True, False, e),
        "no-momentum": Switches(a, b, True, False, 1),
        "no-mapping": Switches(a, b, False, False, 1),
        "no-kl": Switches(a, 0.0, True, False, e),
        "no-kl-no-mapping": Switches(a, 0.0, False, False, 1),
        "kl-only": Switches(0.0, b, False, False, 1),
        "shared-mapping": Switches(a, b, True, True, 1),
    }[cfg.ablation]


def angles(live: torch.Tensor, ref: torch.Tensor, eps: float) -> torch.Tensor:
    """Angle between ``live[..., i, :]`` and ``ref[..., j, :]``: ``(..., N, P)`` -> ``(..., N, N)``,
    arccos of the cosine similarity clamped to [-1 + eps, 1 - eps] so the gradient stays finite."""
    cos = F.normalize(live, dim=-1) @ F.normalize(ref, dim=-1).transpose(-1, -2)
    return torch.arccos(cos.clamp(-1.0 + eps, 1.0 - eps))


def relational_loss(
    teacher_maps: torch.Tensor, student_maps: torch.Tensor, eps: float = 1e-5, delta: float = 1.0
) -> torch.Tensor:
    """L^i_rel for every agent: ``(..., N, P)`` teacher and student maps -> ``(..., N)``.

    Row i compares angles of live agent i with agent j (j != i); the student side's agent j is detached, so
    student i receives only the gradient of its own L^i."""
    teacher_angles = angles(teacher_maps, teacher_maps, eps)  # (..., N, N)
    student_angles = angles(student_maps, student_maps.detach(), eps)
    huber = F.huber_loss(student_angles, teacher_angles, reduction="none", delta=delta)
    off_diagonal = 1.0 - torch.eye(huber.shape[-1], device=huber.device)
    return (huber * off_diagonal).sum(-1)


def kl_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position and agent: logits ``(..., A)`` -> ``(...)``."""
    teacher_logp = F.log_softmax(teacher_logits.float(), dim=-1)
    student_logp = F.log_softmax(student_logits.float(), dim=-1)
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


class Ours(BaseAlgorithm):
    """Teacher, then relational distillation into an ensemble of n students (see the module docstring)."""

    def __init__(self, ctx) -> None:
        cfg: Config = ctx.config
        super().__init__(ctx)
        self.cfg, self.switch = cfg, switches(cfg)
        self.teacher = build_teacher(ctx, cfg)
        self.students = DTLearner(ctx, Layout.INDEPENDENT, cfg)
        self.teacher_steps = cfg.teacher_steps if cfg.teacher_steps is not None else ctx.train.steps
        if cfg.teacher_run is not None:
            self._load_teacher(Path(cfg.teacher_run))
            self.teacher_steps = 0
        self.cache_file = None if cfg.teacher_cache is None else Path(cfg.teacher_cache) / self._teacher_key()
        if self.cache_file is not None and self.cache_file.exists():
            self.teacher.model.load_state_dict(
                checkpoint.load(self.cache_file, map_location=ctx.device, what="cached teacher")
            )
            self.teacher_steps = 0
        self.num_updates = self.teacher_steps + ctx.train.steps
        feature_dim, width = cfg.head_hidden, cfg.mapping_width
        self.map_student = MLP(cfg.width, width, width, layers=1).to(ctx.device)  # N
        self.map_teacher = (
            self.map_student
            if self.switch.shared_mapping
            else MLP(feature_dim, width, width, layers=1).to(ctx.device)
        )  # M
        student_groups = self.students.model.optimizer_groups(ctx.train.weight_decay)
        student_groups.append(
            {"params": list(self.map_student.parameters()), "weight_decay": ctx.train.weight_decay}
        )
        self.students.optimizer, self.students.scheduler = make_optimizer(student_groups, ctx.train)
        self.separate_teacher_map = self.switch.mapping and not self.switch.shared_mapping
        self.teacher_map_optimizer, _ = make_optimizer(
            self.map_teacher.parameters(), replace(ctx.train, warmup_steps=0)
        )
        self.student_updates = 0
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _teacher_key(self) -> str:
        """File name of this run's teacher in ``teacher_cache``: a hash of all that determines it."""
        train, data = self.ctx.train, self.ctx.dataset
        key = {
            "dataset": data.metadata.checksum,
            "episodes": data.n_episodes,
            "model": {
                f: getattr(self.cfg, f)
                for f in ("context", "width", "layers", "heads", "dropout", "return_scale", "head_hidden")
            },
            "train": {
                f: getattr(train, f)
                for f in (
                    "batch_size",
                    "lr",
                    "weight_decay",
                    "warmup_steps",
                    "grad_clip",
                    "precision",
                    "seed",
                )
            },
            "teacher_steps": self.teacher_steps,
        }
        if self.cfg.teacher != "concat":  # concatenation teachers keep their earlier file names
            key["teacher"] = {"teacher": self.cfg.teacher, "agent_ids": self.cfg.agent_ids}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return f"teacher-{digest}.pt"

    def _load_teacher(self, run_dir: Path) -> None:
        config_path, checkpoint_path = run_dir / "config.json", run_dir / "checkpoint.pt"
        if not config_path.exists() or not checkpoint_path.exists():
            raise ConfigError(
                f"config field algo.teacher_run: {run_dir} is not a finished teacher run "
                "(config.json and checkpoint.pt expected)"
            )
        method = json.loads(config_path.read_text()).get("method")
        if method != "teacher":
            raise ConfigError(f"config field algo.teacher_run: {run_dir} is a {method!r} run, not 'teacher'")
        state = checkpoint.load(checkpoint_path, map_location=self.ctx.device, what="teacher checkpoint")
        try:
            self.teacher.model.load_state_dict(state["algo"]["model"])
        except RuntimeError as exc:
            raise ConfigError(
                f"config field algo.teacher_run: {run_dir} does not match this dataset/model: "
                f"{str(exc).splitlines()[0]}"
            ) from exc

    def update(self, step: int) -> dict[str, float]:
        if step < self.teacher_steps:
            return {f"teacher/{k}": v for k, v in self.teacher.update(step).items()}
        if self.cache is None:
            if self.cache_file is not None and not self.cache_file.exists():
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.save(self.teacher.model.state_dict(), self.cache_file)
            self.cache = teacher_outputs(self.teacher, self.teacher.sampler)
        return self._student_update()

    def _student_update(self) -> dict[str, float]:
        students, sw = self.students, self.switch
        students.model.train()
        self.map_student.train()
        window = students.sampler.sample(self.ctx.train.batch_size, students.generator)
        logits, features = students.forward(window)  # (B, K, N, A), (N, B, K, 1, D)
        student_features = features[:, :, :, 0].permute(1, 2, 0, 3).float()  # (B, K, N, D)
        e, t = window.episode[:, None], window.step
        teacher_features, teacher_logits = (
            self.cache[0][e, t],
            self.cache[1][e, t],
        )  # (B, K, N, F), (B, K, N, A)

        ce = F.cross_entropy(
            masked_logits(logits, window.action_mask).flatten(0, 2),
            window.actions.flatten(),
            reduction="none",
        ).view(window.actions.shape)  # (B, K, N)
        per_step = ce
        terms = {"loss/action": ce}
        if sw.alpha > 0:
            if sw.mapping:
                teacher_maps, student_maps = (
                    self.map_teacher(teacher_features),
                    self.map_student(student_features),
                )
            else:
                teacher_maps, student_maps = teacher_features, student_features
            rel = relational_loss(teacher_maps, student_maps, self.cfg.cos_eps, self.cfg.huber_delta)
            per_step = per_step + sw.alpha * rel
            terms["loss/rel"] = rel
        if sw.beta > 0:
            kl = kl_loss(
                masked_logits(teacher_logits, window.action_mask), masked_logits(logits, window.action_mask)
            )
            per_step = per_step + sw.beta * kl
            terms["loss/kl"] = kl
        weight = window.mask.float()[..., None]  # (B, K, 1)
        denom = weight.sum().clamp(min=1.0)
        loss = (per_step * weight).sum() / denom  # sum over agents of each agent's mean loss

        # M's parameters are not in the students' optimizer: their gradients keep accumulating
        grad_norm = optimizer_step(loss, students.optimizer, students.scheduler, self.ctx.train.grad_clip)
        self.student_updates += 1
        if self.separate_teacher_map and self.student_updates % sw.momentum_every == 0:
            for p in self.map_teacher.parameters():
                if p.grad is not None:
                    p.grad /= sw.momentum_every  # average of the accumulated updates' gradients
            torch.nn.utils.clip_grad_norm_(
                self.map_teacher.parameters(), self.ctx.train.grad_clip or float("inf")
            )
            self.teacher_map_optimizer.step()
            self.teacher_map_optimizer.zero_grad(set_to_none=True)
        metrics = {
            k: (v.detach() * weight).sum().item() / float(denom) / window.actions.shape[-1]
            for k, v in terms.items()
        }
        metrics["loss/total"] = loss.item()
        metrics["grad_norm"] = float(grad_norm)
        return metrics

    def policy(self):
        return self.students.policy()

    @property
    def return_scale(self) -> float:
        """The students' return scale (the teacher's is the same)."""
        return self.students.return_scale

    def extra_policies(self) -> dict:
        """The centralized teacher, evaluated beside the students for reference (needs all agents' data)."""
        return {"teacher": self.teacher.policy()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher.state_dict(),
            "students": self.students.state_dict(),
            "map_student": self.map_student.state_dict(),
            "map_teacher": self.map_teacher.state_dict(),
            "teacher_map_optimizer": self.teacher_map_optimizer.state_dict(),
            "student_updates": self.student_updates,
            # M's gradients accumulated since its last step, so a resumed run continues exactly
            "map_teacher_grads": [
                None if p.grad is None else p.grad.clone() for p in self.map_teacher.parameters()
            ],
            "teacher_steps": self.teacher_steps,
            # the model weights under "model" are the deployable students (used by load_policy)
            "model": self.students.model.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.students.load_state_dict(state["students"])
        self.map_student.load_state_dict(state["map_student"])
        self.map_teacher.load_state_dict(state["map_teacher"])
        self.teacher_map_optimizer.load_state_dict(state["teacher_map_optimizer"])
        self.student_updates = int(state["student_updates"])
        self.teacher_steps = int(state["teacher_steps"])
        self.num_updates = self.teacher_steps + self.ctx.train.steps
        for p, grad in zip(self.map_teacher.parameters(), state["map_teacher_grads"], strict=True):
            p.grad = grad
        self.cache = None  # recomputed from the restored teacher on the next student update


register(AlgoEntry("ours", Config, Ours, "centralized teacher DT distilled into per-agent student DTs"))
