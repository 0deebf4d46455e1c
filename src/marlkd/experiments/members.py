"""Seeds as members: the runs of a sweep cell that differ only in their seed, trained as one program.

A decision transformer's weights carry a member axis (``marlkd.models.layers``); S runs of IDT (N agents,
N members each) or MADT (one member each) become one model of S x N (or S) members, trained by one
forward, one backward and one fused AdamW step. What makes each member the run it stands for:

- weights: each seed's learner is built exactly as :func:`marlkd.train` builds it (same seed, same
  initial weights), then its weights are stacked into the group's model, seed-major;
- data: each member samples its windows with its own learner's sampler and generator (the run's data
  order);
- loss, gradient clipping and optimizer state: the loss is the sum of the members' losses (members share
  no weights, so each gets its own gradient); the gradient norm is clipped per seed (the norm over that
  seed's slices, as a single run clips over its own weights); AdamW's update is elementwise;
- dropout: drawn independently per element, hence per member, from the process's generator (so with
  dropout a member's trajectory is a different draw from the separate run's, not the same numbers);
- evaluation and results: each member's weights, optimizer slices and generator are copied back into its
  own learner, which writes the run directory a single run writes (``config.json``, ``metrics.csv``,
  ``checkpoint.pt``, ``results.json``), evaluated as a single run is.

With dropout 0 and fp32, a member's weights after N steps equal the separate run's up to floating-point
summation order (``tests/test_members.py``). A group keeps its own checkpoint (``members_checkpoint.pt`` in
its first run's directory) and resumes from it. A member whose evaluation or writing fails is reported
as failed and the others keep their results; a group that fails as a whole falls back to separate runs
(in a sweep, :class:`SeedGroups`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from marlkd import atomic
from marlkd.errors import ConfigError

# Methods whose learner is one decision transformer trained on the action loss (algos/_dt.DTLearner).
MEMBER_METHODS = ("idt", "madt", "teacher")
GROUP_CHECKPOINT = "members_checkpoint.pt"
GROUP_FAILED = "members_failed.json"


def _without_seed_and_out(config) -> dict[str, Any]:
    data = config.to_dict()
    data["train"] = {k: v for k, v in data["train"].items() if k != "seed"}
    data.pop("out", None)
    data.get("eval", {}).pop("gif", None)
    return data


def check_group(configs: Sequence) -> None:
    """Raise :class:`ConfigError` unless ``configs`` may train as members: two or more runs of a member
    method that differ only in ``train.seed`` (and ``out``), with distinct seeds."""
    if len(configs) < 2:
        raise ConfigError("a member group needs at least two runs")
    first = configs[0]
    if first.method not in MEMBER_METHODS:
        raise ConfigError(
            f"method {first.method!r} cannot train as members (those that can: {MEMBER_METHODS})"
        )
    if getattr(first.algo, "teacher", "concat") != "concat":
        raise ConfigError("only the concatenation teacher (a plain decision transformer) trains as members")
    reference = _without_seed_and_out(first)
    for config in configs[1:]:
        if _without_seed_and_out(config) != reference:
            raise ConfigError(f"runs {first.out} and {config.out} differ in more than their seed")
    seeds = [config.train.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"member runs need distinct seeds, got {seeds}")


def clip_per_member_(params: Sequence[torch.Tensor], members: int, max_norm: float) -> torch.Tensor:
    """Clip the gradients of ``members`` stacked runs separately: each run's global norm is taken over its
    slice (along the leading axis) of every parameter, as ``clip_grad_norm_`` takes it over one run's
    parameters. Returns the pre-clip norms ``(members,)``; ``max_norm`` <= 0: no clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    squares = torch.stack([g.reshape(members, -1).float().pow(2).sum(1) for g in grads]).sum(0)
    norms = squares.sqrt()
    if max_norm > 0:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.view(members, -1).mul_(coef[:, None].to(g.dtype))
    return norms


class MemberGroup:
    """S decision-transformer learners (one per seed, built as single runs build them) trained as the
    members of one model. ``update`` returns one metrics dict per member; :meth:`sync` copies the group's
    state of a member back into its learner (then ``learners[s]`` is that run's algorithm)."""

    def __init__(self, learners: Sequence) -> None:
        from marlkd.models.decision_transformer import DecisionTransformer
        from marlkd.optim import make_optimizer

        self.learners = list(learners)
        first = self.learners[0]
        for learner in self.learners:
            if type(learner.model) is not DecisionTransformer:
                raise ConfigError("only a plain decision transformer can train as members")
        self.size = len(self.learners)
        self.ctx, self.layout = first.ctx, first.layout
        self.n_agents, self.n_actions = first.n_agents, first.n_actions
        cfg = first.model.cfg
        self.model = DecisionTransformer(replace(cfg, members=cfg.members * self.size)).to(self.ctx.device)
        with torch.no_grad():
            sources = [dict(learner.model.named_parameters()) for learner in self.learners]
            for name, param in self.model.named_parameters():
                param.copy_(torch.cat([source[name] for source in sources], dim=0))
        self.optimizer, self.scheduler = make_optimizer(
            self.model.optimizer_groups(self.ctx.train.weight_decay), self.ctx.train
        )
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]

    def update(self, step: int) -> list[dict[str, float]]:
        from marlkd.algos._dt import action_loss
        from marlkd.models.layouts import per_agent_logits, to_inputs
        from marlkd.optim import autocast

        self.model.train()
        batch = self.ctx.train.batch_size
        windows = [learner.sampler.sample(batch, learner.generator) for learner in self.learners]
        inputs = [to_inputs(window, self.layout, self.n_actions) for window in windows]
        fields = ("returns", "obs", "actions", "timesteps", "mask")
        stacked = [torch.cat([getattr(item, name) for item in inputs], dim=0) for name in fields]
        with autocast(self.ctx.device, self.ctx.autocast_dtype):
            logits, _ = self.model(*stacked)
        losses = [
            action_loss(per_agent_logits(part, self.layout, self.n_agents), window)
            for part, window in zip(logits.float().chunk(self.size, dim=0), windows, strict=True)
        ]
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        norms = clip_per_member_(self._params, self.size, self.ctx.train.grad_clip).tolist()
        self.optimizer.step()
        self.scheduler.step()
        values = torch.stack(losses).detach().tolist()
        return [
            {"loss/action": value / self.n_agents, "grad_norm": norm}
            for value, norm in zip(values, norms, strict=True)
        ]

    def sync(self, member: int) -> Any:
        """Copy member ``member``'s weights, optimizer state and schedule into its learner; return it."""
        learner = self.learners[member]
        with torch.no_grad():
            own = dict(learner.model.named_parameters())
            for name, param in self.model.named_parameters():
                own[name].copy_(param.chunk(self.size, dim=0)[member])
        state = self.optimizer.state_dict()
        sliced = {
            index: {
                key: value.chunk(self.size, dim=0)[member].clone()
                if torch.is_tensor(value) and value.dim() > 0
                else value
                for key, value in entry.items()
            }
            for index, entry in state["state"].items()
        }
        learner.optimizer.load_state_dict({"state": sliced, "param_groups": state["param_groups"]})
        learner.scheduler.load_state_dict(self.scheduler.state_dict())
        return learner

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generators": [learner.generator.get_state() for learner in self.learners],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for learner, generator in zip(self.learners, state["generators"], strict=True):
            learner.generator.set_state(generator)


@dataclass
class MemberFailure:
    """A member run that failed while its group finished (its evaluation or its files)."""

    out: str
    error: str
    traceback: str


def train_members(configs: Sequence, *, progress: bool = False) -> list[dict[str, Any] | MemberFailure]:
    """Train the runs ``configs`` (differing only in ``train.seed`` and ``out``, see :func:`check_group`)
    as the members of one program; return, per config, its results (``results.json``'s content, as
    :func:`marlkd.train` returns it) or a :class:`MemberFailure`. Runs already finished are returned as
    :func:`marlkd.train` returns them; a single remaining run trains alone. An error before the members'
    results are written (building, training) is raised: the caller may fall back to separate runs."""
    from marlkd.training import train

    check_group(configs)
    finished: dict[int, Any] = {}
    for index, config in enumerate(configs):
        if (Path(config.out) / "results.json").exists():
            finished[index] = train(config, progress=False)
    pending = [index for index in range(len(configs)) if index not in finished]
    if len(pending) == 1:
        finished[pending[0]] = train(configs[pending[0]], progress=progress)
    if len(pending) > 1:
        finished.update(_train_pending([configs[i] for i in pending], pending, progress))
    return [finished[index] for index in range(len(configs))]


def _train_pending(configs: list, indices: list[int], progress: bool) -> dict[int, Any]:
    from marlkd.threads import apply_threads
    from marlkd.training.run_dir import cut_dataset, pin_dataset

    first, full = pin_dataset(configs[0])
    configs = [replace(c, data=first.data, data_checksum=first.data_checksum) for c in configs]
    dataset = cut_dataset(full, first)
    apply_threads(first.train.threads)
    group = MemberGroup([_member_learner(config, dataset) for config in configs])
    training = _GroupTraining(group, configs, dataset)
    train_time = training.run(progress)
    outcomes: dict[int, Any] = {}
    for member, (index, config) in enumerate(zip(indices, configs, strict=True)):
        try:
            outcomes[index] = _save_member(group, member, config, len(configs), train_time)
        except Exception as exc:  # this member's failure is its own: the others keep their results
            import traceback

            error = f"{type(exc).__name__}: {exc}"
            outcomes[index] = MemberFailure(str(config.out), error, traceback.format_exc())
    training.path.unlink(missing_ok=True)
    return outcomes


def _member_learner(config, dataset) -> Any:
    """The learner of one member's run, built (and seeded) as a single run's is; its config.json written."""
    from marlkd.training import build_algorithm
    from marlkd.training.run_dir import CONFIG, check_same_run, read_run_config

    run_dir = Path(config.out)
    existing = read_run_config(run_dir)
    if existing is not None and check_same_run(run_dir, existing, config, False) != "same":
        raise ConfigError(f"{run_dir} holds a run with other settings: trained alone, not as a member")
    run_dir.mkdir(parents=True, exist_ok=True)
    learner = build_algorithm(config, run_dir, dataset)[0]  # seeded as a single run is
    atomic.write_json(run_dir / CONFIG, config.to_dict())
    return learner


class _GroupTraining:
    """The update loop of a member group, with its own checkpoint (in the first run's directory)."""

    def __init__(self, group: MemberGroup, configs: list, dataset: Any) -> None:
        self.group, self.configs, self.dataset = group, configs, dataset
        self.first = configs[0]
        self.seeds = [config.train.seed for config in configs]
        self.path = Path(self.first.out) / GROUP_CHECKPOINT

    def _resume(self) -> tuple[int, float]:
        """(updates done, training time) of the group's checkpoint when it holds these members."""
        from marlkd import checkpoint
        from marlkd.training.run_dir import restore_rng

        if not self.path.exists():
            return 0, 0.0
        state = checkpoint.load(self.path, map_location=self.group.ctx.device, what="member group checkpoint")
        if state.get("seeds") != self.seeds:  # other members: start again
            return 0, 0.0
        self.group.load_state_dict(state["group"])
        restore_rng(state)
        return int(state["step"]), float(state["train_time_s"])

    def _save(self, step: int, train_time: float) -> None:
        from marlkd import checkpoint
        from marlkd.training.run_dir import numpy_rng_state

        state = {
            "step": step,
            "seeds": self.seeds,
            "group": self.group.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        state.update({"numpy_rng": numpy_rng_state(), "train_time_s": train_time})
        checkpoint.save(state, self.path)

    def run(self, progress: bool) -> float:
        """Train the group to ``train.steps``, logging each member's metrics to its run; the group's
        training time."""
        from marlkd.metrics_log import MetricsLog
        from marlkd.training import run_evaluation

        first, group, size = self.first, self.group, len(self.configs)
        start, train_time = self._resume()
        total = first.train.steps
        logs = [MetricsLog(Path(config.out), resume_step=start) for config in self.configs]
        bar = None
        if progress and start < total:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=start, desc=f"{first.method} x{size}", unit="upd")
        try:
            for step in range(start, total):
                t0 = time.perf_counter()
                metrics = group.update(step)
                train_time += time.perf_counter() - t0
                done = step + 1
                if done % first.train.log_every == 0 or done == total:
                    for log, values in zip(logs, metrics, strict=True):
                        log.log(done, train_time / size, values)
                if first.eval.every and done % first.eval.every == 0 and done < total and first.eval.episodes:
                    for member, log in enumerate(logs):
                        summary = run_evaluation(group.sync(member).policy(), self.dataset, first.eval)
                        log.log(done, train_time / size, _eval_metrics(summary))
                if done % first.train.checkpoint_every == 0 and done < total:
                    self._save(done, train_time)
                if bar is not None:
                    bar.update(1)
            self._save(total, train_time)
        finally:
            if bar is not None:
                bar.close()
            for log in logs:
                log.close()
        return train_time


def _save_member(group: MemberGroup, member: int, config, size: int, train_time: float) -> dict[str, Any]:
    """Write a trained member's final checkpoint into its run directory and finish the run."""
    from marlkd import checkpoint
    from marlkd.training.run_dir import CHECKPOINT, training_state

    learner = group.sync(member)
    state = training_state(config.train.steps, learner.state_dict(), train_time / size, config.method)
    checkpoint.save(state, Path(config.out) / CHECKPOINT)
    return _finish_member(config, size, train_time)


def _eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    return {"eval/return_mean": summary["return_mean"], "eval/return_std": summary["return_std"]}


def _finish_member(config, size: int, group_time: float) -> dict[str, Any]:
    """A trained member (its final checkpoint written) finished by :func:`marlkd.train` itself: it finds
    the run trained, evaluates it and writes ``results.json`` as for a single run, to which the group's
    size and training time are added (``train_time_s`` is this member's share of the group's)."""
    from marlkd.training import RESULTS, train

    results = dict(train(config, progress=False))
    results.update({"members": size, "members_train_time_s": group_time})
    atomic.write_json(Path(config.out) / RESULTS, results)
    return results


def _group_key(run) -> str:
    data = run.to_dict()
    for key in ("run_id", "seed", "sweep"):
        data.pop(key, None)
    config = dict(data["config"])
    config["train"] = {k: v for k, v in dict(config.get("train", {})).items() if k != "seed"}
    data["config"] = config
    return json.dumps(data, sort_keys=True, default=str)


@dataclass
class SeedGroups:
    """A sweep's run function that trains the runs of a cell differing only in seed as members.

    ``groups`` maps a run id to its group: ``(run, run directory)`` of each of the group's runs, in seed
    order. Executing any run of a group trains every unfinished run of it (under the group's lock), so the
    group's other runs, when the sweep reaches them, find their results and return at once; a member that
    failed in its group (:class:`MemberFailure`) trains alone when the sweep reaches it, and fails as a
    run of its own if it fails again. A group that fails as a whole is marked (``members_failed.json`` in
    its first run's directory) and its runs then train one at a time, as without grouping; a run outside
    any group trains as always.
    """

    groups: dict[str, tuple[tuple[Any, str], ...]]

    @classmethod
    def of(cls, runs: Sequence, run_dir_of) -> SeedGroups:
        """Group ``runs`` (:class:`~marlkd.experiments.spec.RunSpec`); ``run_dir_of(run)`` gives a run's
        directory. Only offline runs of :data:`MEMBER_METHODS` group, and only with another seed."""
        by_key: dict[str, list] = {}
        for run in runs:
            factored = dict(run.config.get("algo") or {}).get("teacher", "concat") != "concat"
            if run.kind == "offline" and run.method in MEMBER_METHODS and not factored:
                by_key.setdefault(_group_key(run), []).append(run)
        groups: dict[str, tuple[tuple[Any, str], ...]] = {}
        for members in by_key.values():
            if len(members) < 2:
                continue
            members.sort(key=lambda run: run.seed)
            group = tuple((run, str(run_dir_of(run))) for run in members)
            groups.update((run.run_id, group) for run in members)
        return cls(groups)

    def __call__(self, run, run_dir: Path, dataset: Path | None) -> dict[str, Any]:
        from marlkd.errors import MarlkdError
        from marlkd.experiments.results import locked
        from marlkd.experiments.runner import train_run
        from marlkd.run_config import RunConfig

        group = self.groups.get(run.run_id)
        if group is None or dataset is None:
            return train_run(run, run_dir, dataset)
        lead = Path(group[0][1])
        with locked(lead.parent / f"{lead.name}.members"):
            unfinished = [d for _, d in group if not (Path(d) / "results.json").exists()]
            if (lead / GROUP_FAILED).exists() or Path(run_dir) not in [Path(d) for d in unfinished]:
                return train_run(run, run_dir, dataset)
            if len(unfinished) == 1:  # the group finished but this member failed: it trains alone, and a
                return train_run(run, run_dir, dataset)  # failure now is its own, not the group's
            configs = [
                RunConfig.from_dict({**member.config, "data": str(dataset), "out": directory})
                for member, directory in group
            ]
            try:
                outcomes = train_members(configs)
            except Exception as exc:
                import traceback

                lead.mkdir(parents=True, exist_ok=True)
                atomic.write_json(
                    lead / GROUP_FAILED,
                    {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
                )
                print(f"the member group of {run.run_id} failed ({exc}); training its runs one at a time")
                return train_run(run, run_dir, dataset)
        outcome = outcomes[[member.run_id for member, _ in group].index(run.run_id)]
        if isinstance(outcome, MemberFailure):
            raise MarlkdError(
                f"run {run.run_id} failed in its member group: {outcome.error}\n{outcome.traceback}"
            )
        return outcome
