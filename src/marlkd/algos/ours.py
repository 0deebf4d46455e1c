"""Ours: a centralized teacher decision transformer distilled into n decentralized student DTs
(Algorithm 1 of Tseng et al.). The file reads in the algorithm's order:

1. **Teacher phase.** The centralized teacher (``marlkd.algos.teacher``) trains on the action loss.
2. **Freeze and cache.** The teacher is frozen; its features f^i and logits at every dataset step are
   computed once, in eval mode, and looked up by the students' batches.
3. **Student phase.** The n students train as one ensemble (each sees only its own agent's trajectory) on

       L^i = L^i_action + alpha * L^i_rel + beta * L^i_KL,
       L^i_rel = sum_{j != i} Huber(angle(M(f^i), M(f^j)), angle(N(fbar^i), N(fbar^j))),
       L^i_KL  = KL(teacher's action distribution of agent i || student i's),

   with M (teacher side) and N (student side) two-layer mapping MLPs. In the paper M trains with the
   students but takes an optimizer step only every ``momentum_every``-th update of N. Student i's
   parameters get the gradient of L^i alone: in L^i the other students' features enter as constants.

The paper's method is the default. Because its L_rel can be driven to zero by mapping every feature to one
direction on both sides (both M and N trainable), the config offers teacher sides that cannot move with
the loss (``teacher_map``: M an exponential moving average of N as in MoCo, M frozen at initialisation, or
no M), a spread-keeping term on the mapped features (``spread``, VICReg's variance term on unit
vectors), and teacher targets conditioned on the evaluation's target return (``teacher_target``). The
``distill/*`` diagnostics (``marlkd.algos.distill_diagnostics``) are logged every ``train.log_every``
updates and a collapse is warned about once per run.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from marlkd import checkpoint
from marlkd.algos import AlgoEntry, register
from marlkd.algos import distill_diagnostics as diag
from marlkd.algos._dt import DTLearner
from marlkd.algos.base import BaseAlgorithm
from marlkd.algos.teacher import (
    TEACHER_TARGETS,
    TeacherTarget,
    eval_target_returns,
    load_teacher_run,
    teacher_key,
    teacher_outputs,
    teacher_view,
)
from marlkd.algos.teacher_models import TeacherModelConfig, build_teacher
from marlkd.config import check
from marlkd.models.layers import MLP
from marlkd.models.layouts import Layout, masked_logits
from marlkd.names import ABLATIONS, METHOD_NAMES, Ablation
from marlkd.optim import make_optimizer, optimizer_step

# The teacher-side mapping M: trained with the students (the paper), an exponential moving average of N
# (no gradient), frozen at initialisation (no gradient), or none (the teacher's raw features).
TeacherMap = Literal["trained", "ema", "frozen", "identity"]
TEACHER_MAPS: tuple[str, ...] = get_args(TeacherMap)


@dataclass(frozen=True)
class Config(TeacherModelConfig):
    """Distillation settings (the model fields are shared by the teacher and the students; ``teacher`` and
    ``agent_ids`` choose the teacher's network).

    Attributes:
        alpha: weight of the relational loss L_rel.
        beta: weight of the KL distillation loss L_KL.
        momentum_every: e, a trained M steps once every e updates of N (1: together).
        mapping_width: width of the mapping networks M and N (two layers).
        ablation: the variant: the paper's ``full``, its Table 3 ablations ``no-momentum`` (e = 1),
            ``no-mapping`` (angles on raw features), ``no-kl`` (beta = 0), ``no-kl-no-mapping``,
            ``kl-only`` (conventional distillation: alpha = 0), ``shared-mapping`` (M = N, one network),
            or a remedy on top of ``full``: ``ema-mapping`` (teacher_map = ema), ``frozen-mapping``
            (teacher_map = frozen), ``raw-teacher`` (teacher_map = identity), ``spread`` (spread = true),
            ``eval-target`` (teacher_target = eval-return).
        teacher_map: the teacher side of L_rel: ``trained`` (the paper: M learns with the students),
            ``ema`` (M = an exponential moving average of N, starting as a copy of it, no gradient; needs
            ``head_hidden == width``), ``frozen`` (M fixed at its initialisation) or ``identity`` (the
            teacher's raw features). The last three hold the teacher side by a stop-gradient.
        ema_decay: M <- ema_decay * M + (1 - ema_decay) * N after every update (``teacher_map = ema``).
        spread: add the spread term: for each agent and mapping, the mean over the P dimensions of
            relu(1 - sqrt(P) * std over the batch's steps of the unit-length mapped feature) (VICReg's
            variance term; sqrt(P) * std is 1 for directions spread uniformly, 0 when collapsed).
        spread_weight: its weight.
        teacher_target: the returns-to-go the cached teacher outputs are conditioned on: ``own-return``
            (each dataset step's own, the paper) or ``eval-return`` (the evaluation's target, the
            dataset's best per-agent episode return, minus the rewards received so far).
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
    teacher_map: TeacherMap = "trained"
    ema_decay: float = 0.99
    spread: bool = False
    spread_weight: float = 1.0
    teacher_target: TeacherTarget = "own-return"
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
        check(
            self.teacher_map in TEACHER_MAPS,
            "algo.teacher_map",
            f"must be one of {TEACHER_MAPS}, got {self.teacher_map!r}",
        )
        check(0.0 <= self.ema_decay < 1.0, "algo.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        check(self.spread_weight >= 0, "algo.spread_weight", f"must be >= 0, got {self.spread_weight}")
        check(
            self.teacher_target in TEACHER_TARGETS,
            "algo.teacher_target",
            f"must be one of {TEACHER_TARGETS}, got {self.teacher_target!r}",
        )
        check(self.teacher_steps is None or self.teacher_steps >= 0, "algo.teacher_steps", "must be >= 0")
        check(0 < self.cos_eps < 0.5, "algo.cos_eps", "must be in (0, 0.5)")
        check(self.huber_delta > 0, "algo.huber_delta", "must be > 0")
        sw = switches(self)
        for needs_equal, why, field in (
            (sw.shared_mapping, "shared-mapping (one mapping network for both sides)", "algo.ablation"),
            (
                sw.mapping and sw.teacher_map == "ema",
                "an EMA teacher map (M a moving average of N)",
                "algo.teacher_map" if self.ablation != "ema-mapping" else "algo.ablation",
            ),
        ):
            check(
                not needs_equal or self.head_hidden == self.width,
                field,
                f"{why} needs equal feature sizes: head_hidden ({self.head_hidden}) == width "
                f"({self.width}); set algo.head_hidden",
            )


@dataclass(frozen=True)
class Switches:
    """What a variant turns on and off (the config's fields with its ``ablation`` applied)."""

    alpha: float
    beta: float
    mapping: bool
    shared_mapping: bool
    momentum_every: int
    teacher_map: str
    spread: bool
    teacher_target: str


def switches(cfg: Config) -> Switches:
    base = Switches(
        cfg.alpha, cfg.beta, True, False, cfg.momentum_every, cfg.teacher_map, cfg.spread, cfg.teacher_target
    )
    return {
        "full": base,
        "no-momentum": replace(base, momentum_every=1),
        "no-mapping": replace(base, mapping=False),
        "no-kl": replace(base, beta=0.0),
        "no-kl-no-mapping": replace(base, beta=0.0, mapping=False),
        "kl-only": replace(base, alpha=0.0, mapping=False),
        "shared-mapping": replace(base, shared_mapping=True, momentum_every=1, teacher_map="trained"),
        "ema-mapping": replace(base, teacher_map="ema"),
        "frozen-mapping": replace(base, teacher_map="frozen"),
        "raw-teacher": replace(base, teacher_map="identity"),
        "spread": replace(base, spread=True),
        "eval-target": replace(base, teacher_target="eval-return"),
    }[cfg.ablation]


# ---------------------------------------------------------------- the student losses


def kl_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """L_KL = KL(teacher || student) per position and agent: logits ``(..., A)`` -> ``(...)``, in fp32."""
    teacher_logp = F.log_softmax(teacher_logits.float(), dim=-1)
    student_logp = F.log_softmax(student_logits.float(), dim=-1)
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


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


def spread_loss(maps: torch.Tensor) -> torch.Tensor:
    """The spread term per agent: ``(S, N, P)`` mapped features of S steps -> ``(N,)``, the mean over
    dimensions of relu(1 - sqrt(P) * std over steps of the unit vectors) (0: spread, 1: one direction)."""
    unit = F.normalize(maps.float(), dim=-1)
    std = unit.std(dim=0, unbiased=False) if unit.shape[0] > 1 else torch.zeros_like(unit[0])
    return F.relu(1.0 - math.sqrt(maps.shape[-1]) * std).mean(-1)


# ---------------------------------------------------------------- the algorithm


class Ours(BaseAlgorithm):
    """Teacher, then relational distillation into an ensemble of n students (see the module docstring)."""

    def __init__(self, ctx) -> None:
        cfg: Config = ctx.config
        super().__init__(ctx)
        self.cfg, self.switch = cfg, switches(cfg)
        # the teacher pi_teacher (parameters theta) and the n students pi^1..n (parameters phi^1..n)
        self.teacher = build_teacher(ctx, cfg)
        self.students = DTLearner(ctx, Layout.INDEPENDENT, cfg)
        self.teacher_steps = cfg.teacher_steps if cfg.teacher_steps is not None else ctx.train.steps
        if cfg.teacher_run is not None:
            load_teacher_run(self.teacher, Path(cfg.teacher_run), ctx.device)
            self.teacher_steps = 0
        self.cache_file = (
            None
            if cfg.teacher_cache is None
            else Path(cfg.teacher_cache)
            / teacher_key(ctx, cfg, self.teacher_steps, getattr(self.teacher.train_data, "sources", ()))
        )
        if self.cache_file is not None and self.cache_file.exists():
            self.teacher.model.load_state_dict(
                checkpoint.load(self.cache_file, map_location=ctx.device, what="cached teacher")
            )
            self.teacher_steps = 0
        self.num_updates = self.teacher_steps + ctx.train.steps
        self._build_mappings()
        self.student_updates = 0
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.diagnostics: dict[str, float] = {}
        self.collapse: tuple[str, int] | None = None  # (metric, student update) of the warned collapse

    def _build_mappings(self) -> None:
        """N (student side) trains with the students; M (teacher side) as ``teacher_map`` says."""
        cfg, ctx, sw = self.cfg, self.ctx, self.switch
        width = cfg.mapping_width
        self.map_student = MLP(cfg.width, width, width, layers=1).to(ctx.device)  # N
        if sw.shared_mapping:
            self.map_teacher = self.map_student  # M = N
        elif sw.teacher_map == "ema":
            self.map_teacher = copy.deepcopy(self.map_student)  # starts as N, as MoCo's key encoder
        elif sw.teacher_map == "identity":
            self.map_teacher = torch.nn.Identity()
        else:
            self.map_teacher = MLP(cfg.head_hidden, width, width, layers=1).to(ctx.device)  # M
        # M held by a stop-gradient (ema, frozen, identity), or trained (the paper; M = N when shared)
        self.teacher_map_frozen = sw.teacher_map != "trained" and not sw.shared_mapping
        self.teacher_map_trained = sw.mapping and not sw.shared_mapping and not self.teacher_map_frozen
        if self.teacher_map_frozen:
            self.map_teacher.requires_grad_(False)
        groups = self.students.model.optimizer_groups(ctx.train.weight_decay)
        groups.append({"params": list(self.map_student.parameters()), "weight_decay": ctx.train.weight_decay})
        self.students.optimizer, self.students.scheduler = make_optimizer(groups, ctx.train)
        self.teacher_map_optimizer = (
            make_optimizer(self.map_teacher.parameters(), replace(ctx.train, warmup_steps=0))[0]
            if self.teacher_map_trained
            else None
        )

    def update(self, step: int) -> dict[str, float]:
        # Algorithm 1, first loop: train the centralized teacher on the action loss
        if step < self.teacher_steps:
            return {f"teacher/{k}": v for k, v in self.teacher.update(step).items()}
        # freeze theta; its outputs at every dataset step are computed once
        if self.cache is None:
            self._freeze_and_cache()
        # second loop: every student i on L_action + alpha L_rel + beta L_KL
        log_step = (step + 1) % self.ctx.train.log_every == 0 or step + 1 == self.num_updates
        return self._student_update(log_step)

    def _freeze_and_cache(self) -> None:
        if self.cache_file is not None and not self.cache_file.exists():
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.save(self.teacher.model.state_dict(), self.cache_file)
        self.teacher.model.requires_grad_(False)
        # the teacher's outputs on the students' windows (the run's dataset), read with its return scale
        students = self.students
        sampler = teacher_view(self.teacher, students.sampler, self.ctx.dataset)
        returns = None
        if self.switch.teacher_target == "eval-return":
            returns = eval_target_returns(self.ctx.dataset, students.target_return, sampler.return_scale)
        self.cache = teacher_outputs(self.teacher, sampler, returns)

    def _student_update(self, log_step: bool) -> dict[str, float]:
        students, sw, cfg = self.students, self.switch, self.cfg
        students.model.train()
        self.map_student.train()
        window = students.sampler.sample(self.ctx.train.batch_size, students.generator)
        logits, features = students.forward(window)  # (B, K, N, A), (N, B, K, 1, D)
        student_features = features[:, :, :, 0].permute(1, 2, 0, 3).float()  # (B, K, N, D)
        e, t = window.episode[:, None], window.step
        teacher_features, teacher_logits = self.cache[0][e, t], self.cache[1][e, t]  # (B, K, N, F), (.., A)
        valid = window.mask  # (B, K)
        weight = valid.float()[..., None]  # (B, K, 1)
        denom = weight.sum().clamp(min=1.0)

        def batch_mean(per_step: torch.Tensor) -> torch.Tensor:  # (B, K, N) -> sum over agents of means
            return (per_step * weight).sum() / denom

        # L_action: cross-entropy to the dataset action
        action = F.cross_entropy(
            masked_logits(logits, window.action_mask).flatten(0, 2),
            window.actions.flatten(),
            reduction="none",
        ).view(window.actions.shape)  # (B, K, N)
        # L_rel: the angles between agents through M (teacher side) and N (student side); L_KL: the
        # teacher's action distribution of agent i against student i's. A term that is switched off is
        # still computed on log steps, without gradient, for the diagnostics.
        with torch.set_grad_enabled(sw.alpha > 0 or sw.spread):
            if sw.mapping:
                student_maps = self.map_student(student_features)
                with torch.set_grad_enabled(torch.is_grad_enabled() and not self.teacher_map_frozen):
                    teacher_maps = self.map_teacher(teacher_features)
            else:
                teacher_maps, student_maps = teacher_features, student_features
        with torch.set_grad_enabled(sw.alpha > 0):
            rel = relational_loss(teacher_maps, student_maps, cfg.cos_eps, cfg.huber_delta)  # (B, K, N)
        with torch.set_grad_enabled(sw.beta > 0):
            kl = kl_loss(
                masked_logits(teacher_logits, window.action_mask), masked_logits(logits, window.action_mask)
            )
        terms = {"action": batch_mean(action)}
        if sw.alpha > 0:
            terms["rel"] = sw.alpha * batch_mean(rel)
        if sw.beta > 0:
            terms["kl"] = sw.beta * batch_mean(kl)
        if sw.spread and sw.mapping:
            spread = spread_loss(student_maps[valid]).sum()
            if teacher_maps.requires_grad and not sw.shared_mapping:
                spread = spread + spread_loss(teacher_maps[valid]).sum()
            terms["spread"] = cfg.spread_weight * spread
        loss = sum(terms.values())

        grad_norms = diag.term_grad_norms(terms, self.students.model) if log_step else {}
        grad_norm = optimizer_step(loss, students.optimizer, students.scheduler, self.ctx.train.grad_clip)
        self.student_updates += 1
        self._step_teacher_map()

        n = window.actions.shape[-1]
        metrics = {"loss/action": terms["action"].item() / n}
        if "rel" in terms:
            metrics["loss/rel"] = batch_mean(rel.detach()).item() / n
        if "kl" in terms:
            metrics["loss/kl"] = batch_mean(kl.detach()).item() / n
        if "spread" in terms:
            metrics["loss/spread"] = terms["spread"].item() / n
        metrics["loss/total"] = loss.item()
        metrics["grad_norm"] = float(grad_norm)
        if log_step:
            metrics.update(grad_norms)
            metrics["distill/l_rel"] = batch_mean(rel.detach()).item() / n
            metrics["distill/l_kl"] = batch_mean(kl.detach()).item() / n
            metrics.update(
                diag.relation_diagnostics(teacher_features[valid], teacher_maps[valid], student_maps[valid])
            )
            self._record(metrics)
        return metrics

    def _step_teacher_map(self) -> None:
        """M after the students' step: the paper's M steps with the average of its gradients accumulated
        over e updates (they are not in the students' optimizer); an EMA M moves toward N."""
        sw = self.switch
        if self.teacher_map_trained and self.student_updates % sw.momentum_every == 0:
            for p in self.map_teacher.parameters():
                if p.grad is not None:
                    p.grad /= sw.momentum_every
            torch.nn.utils.clip_grad_norm_(
                self.map_teacher.parameters(), self.ctx.train.grad_clip or math.inf
            )
            self.teacher_map_optimizer.step()
            self.teacher_map_optimizer.zero_grad(set_to_none=True)
        elif sw.mapping and sw.teacher_map == "ema" and not sw.shared_mapping:
            with torch.no_grad():
                for m, n in zip(self.map_teacher.parameters(), self.map_student.parameters(), strict=True):
                    m.lerp_(n, 1.0 - self.cfg.ema_decay)

    # ---------------------------------------------------------------- diagnostics (log steps only)

    def _record(self, metrics: dict[str, float]) -> None:
        self.diagnostics = {k: v for k, v in metrics.items() if k.startswith("distill/")}
        if self.collapse is None and self.switch.mapping:
            metric = diag.collapsed_metric(self.diagnostics)
            if metric is not None:
                self.collapse = (metric, self.student_updates)
                message = diag.collapse_message(metric, self.diagnostics, self.student_updates)
                warnings.warn(message, diag.CollapseWarning, stacklevel=4)

    def summary(self) -> dict[str, Any]:
        """For results.json: the last logged ``distill/*`` values and the collapse, if one was warned of."""
        out: dict[str, Any] = dict(self.diagnostics)
        out["distill/collapse"] = "" if self.collapse is None else self.collapse[0]
        out["distill/collapse_update"] = -1 if self.collapse is None else self.collapse[1]
        return out

    # ---------------------------------------------------------------- policies and checkpoints

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
            "teacher_map_optimizer": None
            if self.teacher_map_optimizer is None
            else self.teacher_map_optimizer.state_dict(),
            "student_updates": self.student_updates,
            # M's gradients accumulated since its last step, so a resumed run continues exactly
            "map_teacher_grads": [
                None if p.grad is None else p.grad.clone() for p in self.map_teacher.parameters()
            ],
            "teacher_steps": self.teacher_steps,
            "diagnostics": dict(self.diagnostics),
            "collapse": self.collapse,
            # the model weights under "model" are the deployable students (used by load_policy)
            "model": self.students.model.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.students.load_state_dict(state["students"])
        self.map_student.load_state_dict(state["map_student"])
        self.map_teacher.load_state_dict(state["map_teacher"])
        if self.teacher_map_optimizer is not None:
            self.teacher_map_optimizer.load_state_dict(state["teacher_map_optimizer"])
        self.student_updates = int(state["student_updates"])
        self.teacher_steps = int(state["teacher_steps"])
        self.num_updates = self.teacher_steps + self.ctx.train.steps
        for p, grad in zip(self.map_teacher.parameters(), state["map_teacher_grads"], strict=True):
            p.grad = grad
        self.diagnostics = dict(state.get("diagnostics", {}))
        collapse = state.get("collapse")
        self.collapse = None if collapse is None else (str(collapse[0]), int(collapse[1]))
        self.cache = None  # recomputed from the restored teacher on the next student update


register(
    AlgoEntry(
        "ours",
        Config,
        Ours,
        "centralized teacher DT distilled into per-agent student DTs",
        display_name=METHOD_NAMES["ours"],
    )
)
